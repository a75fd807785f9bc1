package tokenizer

import (
	"fmt"
	"strings"
	"testing"
)

// benchText builds about n bytes of mixed English prose, Go code and CJK
// text, varied by a counter so that no paragraph repeats exactly.
func benchText(n int) string {
	english := []string{
		"The quick brown fox jumps over the lazy dog while the scheduler keeps %d streams flowing. ",
		"Tokenizers sit on the request path, so every microsecond spent here is one not spent decoding; ",
		"llama.cpp's vectors ensure we're exact, but speed matters too: it's measured in MB/s (%d runs). ",
		"Don't panic — y'all know the drill: 3.14159, 2,718 and 1e-9 are numbers, not words.\n\n",
	}
	code := []string{
		"func (s *Server) Generate(ctx context.Context, req *pb.Request) (*pb.Reply, error) {\n\tif err := ctx.Err(); err != nil {\n\t\treturn nil, err // %d\n\t}\n",
		"\tfor i := 0; i < len(xs); i++ {\n\t\tsum += xs[i] * ws[i%%%d]\n\t}\n\treturn &pb.Reply{Tokens: out}, nil\n}\n\n",
		"    def forward(self, x):  # layer %d\n        return self.norm(x + self.attn(x))\n",
	}
	cjk := []string{
		"机器学习模型在中央处理器上运行，第%d次推理的延迟很低。",
		"日本語のテキストも正しく分割される必要があります（%d件目）。",
		"한국어 문장도 토큰화됩니다 %d번.\n",
	}
	var sb strings.Builder
	for i := 0; sb.Len() < n; i++ {
		sb.WriteString(fmt.Sprintf(english[i%len(english)], i))
		if i%3 == 0 {
			sb.WriteString(fmt.Sprintf(code[i%len(code)], i))
		}
		if i%2 == 0 {
			sb.WriteString(fmt.Sprintf(cjk[i%len(cjk)], i))
		}
	}
	return sb.String()
}

// BenchmarkEncode tokenizes 100 KB of English, code and CJK with each
// vocabulary; b.SetBytes makes `go test -bench` report MB/s. The target is
// at least 1 MB/s on one core with the Llama-3 vocabulary.
func BenchmarkEncode(b *testing.B) {
	text := benchText(100 << 10)
	for _, vocab := range []string{"llama-bpe", "qwen2", "llama-spm", "gemma2"} {
		b.Run(vocab, func(b *testing.B) {
			tok := loadVocab(b, vocab)
			b.SetBytes(int64(len(text)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := tok.Encode(text, EncodeOptions{AddBOS: BOSNone}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
