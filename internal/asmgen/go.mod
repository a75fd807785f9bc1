module github.com/corelm/corelm/internal/asmgen

go 1.26.0

require github.com/mmcloughlin/avo v0.6.0

require (
	golang.org/x/mod v0.42.0 // indirect
	golang.org/x/sync v0.24.0 // indirect
	// avo pins v0.16.1, which does not compile on Go 1.26.
	golang.org/x/tools v0.52.0 // indirect
)
