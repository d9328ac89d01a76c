package experts

import (
	"context"
	"strings"
	"testing"
)

// TestVerifyOncePerProcess: each expert is hashed the first time it is read
// and not again (reads without a RAM cache go back to the file every time),
// and damage present at the first read fails it, naming the file.
func TestVerifyOncePerProcess(t *testing.T) {
	fx := newFixture(2, 8, testSize)
	s := openStore(t, fx, fx.fs(), Options{VerifyChecksums: true})
	for range 3 {
		ex, err := s.Fetch(context.Background(), 1, []int{2, 5})
		if err != nil {
			t.Fatal(err)
		}
		s.Release(ex)
	}
	st := s.Stats()
	if st.Misses != 6 || st.VerifiedBytes != 2*testSize {
		t.Fatalf("3 fetches of 2 experts: %d reads, %d bytes hashed; want 6 reads and 2 files hashed", st.Misses, st.VerifiedBytes)
	}

	fs := fx.fs()
	bad := fx.set.Path(fakeDir, 0, 3)
	b := append([]byte(nil), fs.files[bad]...)
	b[17] ^= 1
	fs.files[bad] = b
	s = openStore(t, fx, fs, Options{VerifyChecksums: true})
	if _, err := s.Fetch(context.Background(), 0, []int{1, 3}); err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("damaged expert: %v", err)
	}
	// Without verification the same damage goes unnoticed by the store.
	s = openStore(t, fx, fs, Options{})
	ex, err := s.Fetch(context.Background(), 0, []int{3})
	if err != nil {
		t.Fatal(err)
	}
	s.Release(ex)
	if st := s.Stats(); st.VerifiedBytes != 0 {
		t.Fatalf("unverified store hashed %d bytes", st.VerifiedBytes)
	}
}
