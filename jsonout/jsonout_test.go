package jsonout

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/tidwall/gjson"
)

func TestBuilderExact(t *testing.T) {
	tests := []struct {
		name  string
		build func(b *Builder)
		want  string
	}{
		{"empty object", func(b *Builder) { b.Object().EndObject() }, `{}`},
		{"empty array", func(b *Builder) { b.Array().EndArray() }, `[]`},
		{"scalars", func(b *Builder) {
			b.Array().String("a").Int(-3).Float(1.5).Bool(true).Bool(false).Null().EndArray()
		}, `["a",-3,1.5,true,false,null]`},
		{"object members", func(b *Builder) {
			b.Object().Key("a").Int(1).Key("b").String("x").Key("c").Null().EndObject()
		}, `{"a":1,"b":"x","c":null}`},
		{"nested", func(b *Builder) {
			b.Object().
				Key("keys").Array().
				Object().Key("id").Int(1).Key("models").Array().EndArray().EndObject().
				Object().Key("id").Int(2).Key("models").Array().String("m1").String("m2").EndArray().EndObject().
				EndArray().
				Key("total").Int(2).
				Key("meta").Object().Key("ok").Bool(true).EndObject().
				EndObject()
		}, `{"keys":[{"id":1,"models":[]},{"id":2,"models":["m1","m2"]}],"total":2,"meta":{"ok":true}}`},
		{"arrays of arrays", func(b *Builder) {
			b.Array().Array().EndArray().Array().Array().EndArray().EndArray().Object().EndObject().EndArray()
		}, `[[],[[]],{}]`},
		{"raw", func(b *Builder) {
			b.Object().Key("raw").Raw([]byte(`{"x":[1,2]}`)).Key("n").Int(2).EndObject()
		}, `{"raw":{"x":[1,2]},"n":2}`},
		{"escaped key", func(b *Builder) {
			b.Object().Key(`a"<b>`).String("v").EndObject()
		}, `{"a\"\u003cb\u003e":"v"}`},
		{"int extremes", func(b *Builder) {
			b.Array().Int(math.MinInt64).Int(math.MaxInt64).Int(0).EndArray()
		}, `[-9223372036854775808,9223372036854775807,0]`},
		{"floats", func(b *Builder) {
			b.Array().Float(-0.25).Float(1e21).Float(0).Float(1e-7).EndArray()
		}, `[-0.25,1000000000000000000000,0,0.0000001]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b Builder
			tt.build(&b)
			got := string(b.Bytes())
			if got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
			if !gjson.Valid(got) {
				t.Errorf("not valid JSON: %s", got)
			}
		})
	}
}

func TestStringArray(t *testing.T) {
	tests := []struct {
		in   []string
		want string
	}{
		{nil, `[]`},
		{[]string{""}, `[""]`},
		{[]string{"a", "b"}, `["a","b"]`},
		{[]string{"sk-1", `q"x`, "<tag>"}, `["sk-1","q\"x","\u003ctag\u003e"]`},
	}
	for _, tt := range tests {
		got := string(StringArray(tt.in))
		if got != tt.want {
			t.Errorf("StringArray(%q) = %s, want %s", tt.in, got, tt.want)
		}
		r := gjson.Parse(got)
		if !r.IsArray() || len(r.Array()) != len(tt.in) {
			t.Errorf("StringArray(%q) = %s does not parse back to %d elements", tt.in, got, len(tt.in))
		}
		for i, e := range r.Array() {
			if e.String() != tt.in[i] {
				t.Errorf("element %d = %q, want %q", i, e.String(), tt.in[i])
			}
		}
	}
}

func TestAppendString(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", `""`},
		{"plain", `"plain"`},
		{`a"b`, `"a\"b"`},
		{`a\b`, `"a\\b"`},
		{"\n\r\t", `"\n\r\t"`},
		{"\x00\x01\x1f", `"\u0000\u0001\u001f"`},
		{"\b\f\v", `"\u0008\u000c\u000b"`},
		{"<script>&", `"\u003cscript\u003e\u0026"`},
		{"a\u2028b\u2029c", `"a\u2028b\u2029c"`},
		{"\x7f", "\"\x7f\""},
		{"é€😀", `"é€😀"`},
		{"\xff", `"\ufffd"`},
		{"a\xffb", `"a\ufffdb"`},
		{"\xe2\x82", `"\ufffd\ufffd"`},           // truncated €: each stray byte
		{"\xed\xa0\x80", `"\ufffd\ufffd\ufffd"`}, // encoded surrogate
		{"\xc0\xaf", `"\ufffd\ufffd"`},           // overlong '/'
		{"ok\xf0\x9f\x98", `"ok\ufffd\ufffd\ufffd"`},
	}
	for _, tt := range tests {
		got := string(AppendString(nil, tt.in))
		if got != tt.want {
			t.Errorf("AppendString(%q) = %s, want %s", tt.in, got, tt.want)
		}
		if !gjson.Valid(got) {
			t.Errorf("AppendString(%q) = %s is not valid JSON", tt.in, got)
		}
		if !utf8.ValidString(got) {
			t.Errorf("AppendString(%q) = %q is not valid UTF-8", tt.in, got)
		}
	}
	// It appends rather than overwrites.
	if got := string(AppendString([]byte("x:"), "y")); got != `x:"y"` {
		t.Errorf("AppendString appends badly: %s", got)
	}
}

// replaceInvalid is what decoding AppendString's output must give back:
// every byte that is not part of valid UTF-8 becomes U+FFFD, one per byte,
// as encoding/json does. (strings.ToValidUTF8 instead folds a run of invalid
// bytes into a single U+FFFD, so it is the expectation only for valid input.)
func replaceInvalid(s string) string { return string([]rune(s)) }

func checkRoundTrip(t *testing.T, s string) {
	t.Helper()
	out := AppendString(nil, s)
	if !gjson.ValidBytes(out) {
		t.Fatalf("AppendString(%q) = %s is not valid JSON", s, out)
	}
	if !utf8.Valid(out) {
		t.Fatalf("AppendString(%q) = %q is not valid UTF-8", s, out)
	}
	if strings.ContainsAny(string(out[1:len(out)-1]), "<>&\u2028\u2029") {
		t.Fatalf("AppendString(%q) = %s leaves an HTML-unsafe character", s, out)
	}
	got := gjson.Parse(string(out)).String()
	if want := replaceInvalid(s); got != want {
		t.Fatalf("round trip of %q: got %q, want %q", s, got, want)
	}
	if utf8.ValidString(s) {
		if want := strings.ToValidUTF8(s, "\uFFFD"); got != want {
			t.Fatalf("round trip of valid %q: got %q", s, got)
		}
	}
	var std string
	if err := json.Unmarshal(out, &std); err != nil {
		t.Fatalf("encoding/json rejects %s: %v", out, err)
	}
	ref, _ := json.Marshal(s)
	var stdRef string
	if err := json.Unmarshal(ref, &stdRef); err != nil {
		t.Fatal(err)
	}
	if std != stdRef {
		t.Fatalf("AppendString(%q) decodes to %q, encoding/json's encoding to %q", s, std, stdRef)
	}
}

func TestAppendStringRoundTripRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	alphabet := []string{"a", "Z", "0", " ", `"`, `\`, "/", "<", ">", "&", "\n", "\r", "\t", "\x00", "\x1f", "\x7f",
		"é", "€", "😀", "\u2028", "\u2029", "\ufffd", "\xff", "\xc3", "\xe2\x82", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\x80"}
	for i := 0; i < 3000; i++ {
		var sb strings.Builder
		for n := r.IntN(24); n > 0; n-- {
			if r.IntN(4) == 0 {
				sb.WriteByte(byte(r.IntN(256)))
			} else {
				sb.WriteString(alphabet[r.IntN(len(alphabet))])
			}
		}
		checkRoundTrip(t, sb.String())
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "hello", `"\`, "\x00\x01\n", "<>&", "\u2028\u2029", "\xff\xfe", "é\xe2\x82€", "\xed\xa0\x80😀"} {
		f.Add(s)
	}
	f.Fuzz(checkRoundTrip)
}

// randomValue makes a random JSON-able value and writes it with b.
func randomValue(r *rand.Rand, b *Builder, depth int) any {
	k := r.IntN(8)
	if depth > 4 && k >= 6 {
		k = r.IntN(6)
	}
	switch k {
	case 0:
		b.Null()
		return nil
	case 1:
		v := r.IntN(2) == 0
		b.Bool(v)
		return v
	case 2:
		v := int64(r.Uint64())
		b.Int(v)
		return json.Number(strconv.FormatInt(v, 10))
	case 3:
		v := float64(r.IntN(2000000)-1000000) / 64
		b.Float(v)
		return json.Number(strconv.FormatFloat(v, 'f', -1, 64))
	case 4, 5:
		s := randomString(r)
		b.String(s)
		return s
	case 6:
		b.Array()
		arr := []any{}
		for n := r.IntN(4); n > 0; n-- {
			arr = append(arr, randomValue(r, b, depth+1))
		}
		b.EndArray()
		return arr
	default:
		b.Object()
		obj := map[string]any{}
		for n := r.IntN(4); n > 0; n-- {
			key := randomString(r) + strconv.Itoa(n) // distinct keys
			b.Key(key)
			obj[key] = randomValue(r, b, depth+1)
		}
		b.EndObject()
		return obj
	}
}

func randomString(r *rand.Rand) string {
	const chars = "ab\"\\<>&\n\x01é😀\u2028 "
	rs := []rune(chars)
	out := make([]rune, r.IntN(6))
	for i := range out {
		out[i] = rs[r.IntN(len(rs))]
	}
	return string(out)
}

func TestBuilderRandomNested(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	for i := 0; i < 500; i++ {
		var b Builder
		want := randomValue(r, &b, 0)
		out := b.Bytes()
		if !gjson.ValidBytes(out) {
			t.Fatalf("invalid JSON: %s", out)
		}
		dec := json.NewDecoder(strings.NewReader(string(out)))
		dec.UseNumber()
		var got any
		if err := dec.Decode(&got); err != nil {
			t.Fatalf("decode %s: %v", out, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("Builder wrote %s, which decodes to %#v, want %#v", out, got, want)
		}
	}
}
