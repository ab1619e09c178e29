package node

import (
	"os"
	"path/filepath"
	"testing"
)

// TestWriteFileAtomic: the file is replaced, not rewritten in place (a
// reader of the old one still reads it whole), and no temporary file is
// left beside it, after a write or a failed one. That the directory is
// synced after the rename (a power cut cannot bring the old file back)
// no test here can see.
func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "pods.json")
	if err := writeFileAtomic(path, []byte("one\n")); err != nil {
		t.Fatal(err)
	}
	old, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if err := writeFileAtomic(path, []byte("two\n")); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "two\n" {
		t.Fatalf("after the second write: %q, %v; want \"two\\n\"", b, err)
	}
	b := make([]byte, 8)
	if k, _ := old.Read(b); string(b[:k]) != "one\n" {
		t.Fatalf("the old file, open before the second write, reads %q; want \"one\\n\" (replaced, not rewritten)", b[:k])
	}
	// A rename onto a directory fails after the temporary file is
	// written: it must go too.
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := writeFileAtomic(filepath.Join(dir, "sub"), []byte("x")); err == nil {
		t.Fatal("writing over a directory: no error")
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if len(names) != 2 || names[0] != "pods.json" || names[1] != "sub" {
		t.Fatalf("the directory holds %q; want only pods.json and sub", names)
	}
}
