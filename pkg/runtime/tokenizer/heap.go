package tokenizer

// heapPush and heapPop keep q a binary heap under before (the first element
// is the one that goes first). Hand-rolled to avoid container/heap's
// interface calls on the hot path.
func heapPush[T any](q []T, x T, before func(a, b *T) bool) []T {
	q = append(q, x)
	for i := len(q) - 1; i > 0; {
		p := (i - 1) / 2
		if !before(&q[i], &q[p]) {
			break
		}
		q[i], q[p] = q[p], q[i]
		i = p
	}
	return q
}

func heapPop[T any](q []T, before func(a, b *T) bool) ([]T, T) {
	top := q[0]
	last := len(q) - 1
	q[0] = q[last]
	q = q[:last]
	for i := 0; ; {
		l := 2*i + 1
		if l >= len(q) {
			break
		}
		m := l
		if r := l + 1; r < len(q) && before(&q[r], &q[l]) {
			m = r
		}
		if !before(&q[m], &q[i]) {
			break
		}
		q[i], q[m] = q[m], q[i]
		i = m
	}
	return q, top
}
