package checks

import "testing"

func TestOwnMetadata(t *testing.T) {
	if got := ownMetadata(3, "check"); got != `{"keypool_key":3,"keypool_task":"check"}` {
		t.Errorf("ownMetadata: %s", got)
	}
}

// TestParseModelList reads both list shapes, drops Google's "models/"
// prefix, duplicates and empty ids, and sorts.
func TestParseModelList(t *testing.T) {
	got := parseModelList([]byte(`{"data":[{"id":"b"},{"id":"a"},{"id":" "},{"id":"a"}],"models":[{"name":"models/gemini-x"}]}`))
	want := []string{"a", "b", "gemini-x"}
	if len(got) != len(want) {
		t.Fatalf("%v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("%v, want %v", got, want)
		}
	}
}
