package constrain

import (
	"container/list"
	"crypto/sha256"
	"fmt"
	"sync"

	"github.com/corelm/corelm/pkg/runtime/grammar"
)

// Kind is the form a constraint is written in.
type Kind uint8

const (
	JSONSchema Kind = iota + 1 // a JSON Schema document
	JSONObject                 // any JSON object (Text is empty)
	GBNF                       // a grammar in llama.cpp's GBNF
	Regex                      // a regular expression the whole output matches
)

var kindNames = [...]string{JSONSchema: "json_schema", JSONObject: "json_object", GBNF: "grammar", Regex: "regex"}

func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Spec is a constraint as a request states it.
type Spec struct {
	Kind Kind
	Text string
}

// MaxSpecBytes bounds a constraint's text.
const MaxSpecBytes = 256 << 10

// Compile compiles s. Errors wrap grammar.ErrSyntax or grammar.ErrUnsupported
// and name the construct or keyword refused.
func Compile(s Spec) (*grammar.Grammar, error) {
	if len(s.Text) > MaxSpecBytes {
		return nil, fmt.Errorf("%w: the %v constraint has %d bytes, more than %d", grammar.ErrUnsupported, s.Kind, len(s.Text), MaxSpecBytes)
	}
	switch s.Kind {
	case JSONSchema:
		return grammar.FromJSONSchema([]byte(s.Text))
	case JSONObject:
		return grammar.JSONObject(), nil
	case GBNF:
		return grammar.Parse(s.Text)
	case Regex:
		return grammar.FromRegex(s.Text)
	}
	return nil, fmt.Errorf("%w: constraint kind %v", grammar.ErrUnsupported, s.Kind)
}

// Cache keeps compiled constraints by the hash of their kind and text, the
// least recently used dropped past its capacity, so a schema sent with
// every request compiles once. Safe for concurrent use.
type Cache struct {
	mu    sync.Mutex
	cap   int
	order *list.List // of *cacheEntry, most recent first
	byKey map[[32]byte]*list.Element
}

type cacheEntry struct {
	key [32]byte
	g   *grammar.Grammar
}

// NewCache returns a cache of up to n grammars.
func NewCache(n int) *Cache {
	return &Cache{cap: max(n, 1), order: list.New(), byKey: map[[32]byte]*list.Element{}}
}

// Compile returns the compiled s, from the cache when it has it. Errors are
// not cached.
func (c *Cache) Compile(s Spec) (*grammar.Grammar, error) {
	key := sha256.Sum256(append([]byte{byte(s.Kind)}, s.Text...))
	c.mu.Lock()
	if e, ok := c.byKey[key]; ok {
		c.order.MoveToFront(e)
		c.mu.Unlock()
		return e.Value.(*cacheEntry).g, nil
	}
	c.mu.Unlock()
	g, err := Compile(s)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.byKey[key]; ok {
		return e.Value.(*cacheEntry).g, nil
	}
	c.byKey[key] = c.order.PushFront(&cacheEntry{key, g})
	for c.order.Len() > c.cap {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.byKey, last.Value.(*cacheEntry).key)
	}
	return g, nil
}
