package handler

import (
	"testing"

	"github.com/keypool/keypool/rotation"
	"github.com/keypool/keypool/store"
)

// The memo hands out copies: a caller changing what it read does not
// change what the next reader of the same string gets.
func TestReadCandsMemoIsCopied(t *testing.T) {
	k := candKey("openai", "memo-copy", false)
	s := writeCands(k, 7, []rotation.Candidate{{ID: 1, Secret: "a"}, {ID: 2, Secret: "b"}})
	_, first := readCands(k, s)
	first[0].ID, first[1].LastUsed = 99, 5
	read, again := readCands(k, s)
	if read != 7 || len(again) != 2 || again[0].ID != 1 || again[1].LastUsed != 0 {
		t.Fatalf("second read got %d %+v, want the list as written", read, again)
	}
}

// Another instance's write is a different string: it is decoded, not
// answered from the memo.
func TestReadCandsMemoSeesOtherWrites(t *testing.T) {
	k := candKey("openai", "memo-other", false)
	writeCands(k, 1, []rotation.Candidate{{ID: 1}})
	other := encodeCands(2, []rotation.Candidate{{ID: 3}, {ID: 4}})
	read, list := readCands(k, other)
	if read != 2 || len(list) != 2 || list[0].ID != 3 {
		t.Fatalf("got %d %+v, want the other instance's list", read, list)
	}
}

func TestReadUsageMemoIsCopied(t *testing.T) {
	s := writeUsage(map[int64]*store.Usage{4: {KeyID: 4, Requests: 2}})
	m := readUsage(s)
	m[4].Requests = 50
	if again := readUsage(s); again[4] == nil || again[4].Requests != 2 {
		t.Fatalf("second read got %+v, want 2 requests", again[4])
	}
	other := encodeUsage(map[int64]*store.Usage{4: {KeyID: 4, Requests: 9}})
	if got := readUsage(other); got[4].Requests != 9 {
		t.Fatalf("another write read as %+v, want 9 requests", got[4])
	}
}
