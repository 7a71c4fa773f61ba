package pool

import (
	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/jsonout"
)

// Fields is the one encoding of every record: a JSON array of its fields,
// in the order the record's fields function names them. The same function
// writes the record (Fields made by encode) and reads it (made by
// decode), so the writer and the reader cannot disagree on a position.
type Fields struct {
	b  *jsonout.Builder // writing when set
	in []gjson.Result   // reading
	n  int              // fields named so far
}

// next returns the field being read, ok false when writing or past the
// end.
func (f *Fields) next() (gjson.Result, bool) {
	i := f.n
	f.n++
	if f.b != nil || i >= len(f.in) {
		return gjson.Result{}, false
	}
	return f.in[i], true
}

// Int is an integer field.
func (f *Fields) Int(p *int64) {
	if f.b != nil {
		f.b.Int(*p)
	}
	if v, ok := f.next(); ok {
		*p = v.Int()
	}
}

// Bool is a boolean field.
func (f *Fields) Bool(p *bool) {
	if f.b != nil {
		f.b.Bool(*p)
	}
	if v, ok := f.next(); ok {
		*p = v.Bool()
	}
}

// String is a string field.
func (f *Fields) String(p *string) {
	if f.b != nil {
		f.b.String(*p)
	}
	if v, ok := f.next(); ok {
		*p = v.String()
	}
}

// Strings is a field holding a list of strings.
func (f *Fields) Strings(p *[]string) {
	if f.b != nil {
		f.b.Raw(jsonout.StringArray(*p))
	}
	if v, ok := f.next(); ok {
		*p = (*p)[:0]
		for _, x := range v.Array() {
			*p = append(*p, x.String())
		}
	}
}

// Ints is a field holding a list of integers.
func (f *Fields) Ints(p *[]int64) {
	if f.b != nil {
		f.b.Raw(jsonout.IntArray(*p))
	}
	if v, ok := f.next(); ok {
		*p = (*p)[:0]
		for _, x := range v.Array() {
			*p = append(*p, x.Int())
		}
	}
}

// records is a field holding a list of records of one type.
func records[T any](f *Fields, list *[]T, fields func(*T, *Fields)) {
	if f.b != nil {
		appendList(f.b, *list, fields)
	}
	if v, ok := f.next(); ok {
		*list = decodeList(v, fields)
	}
}

func appendRecord[T any](b *jsonout.Builder, r *T, fields func(*T, *Fields)) {
	b.Array()
	fields(r, &Fields{b: b})
	b.EndArray()
}

func appendList[T any](b *jsonout.Builder, list []T, fields func(*T, *Fields)) {
	b.Array()
	for i := range list {
		appendRecord(b, &list[i], fields)
	}
	b.EndArray()
}

// decodeRecord reads v into r; ok false (r partly read) when v is not an
// array of exactly the fields the record has.
func decodeRecord[T any](v gjson.Result, r *T, fields func(*T, *Fields)) bool {
	f := Fields{in: v.Array()}
	fields(r, &f)
	return v.IsArray() && f.n == len(f.in)
}

// decodeList reads a list of records, skipping any of the wrong shape.
func decodeList[T any](v gjson.Result, fields func(*T, *Fields)) []T {
	var out []T
	for _, e := range v.Array() {
		var r T
		if decodeRecord(e, &r, fields) {
			out = append(out, r)
		}
	}
	return out
}

// encode returns the record's encoding.
func encode[T any](r *T, fields func(*T, *Fields)) string {
	var b jsonout.Builder
	appendRecord(&b, r, fields)
	return string(b.Bytes())
}

// decode reads an encoded record.
func decode[T any](s string, fields func(*T, *Fields)) (T, bool) {
	var r T
	ok := decodeRecord(gjson.Parse(s), &r, fields)
	return r, ok
}

// readList returns the list of records kept under key.
func readList[T any](s Shared, key string, fields func(*T, *Fields)) []T {
	v, ok := s.Get(key)
	if !ok {
		return nil
	}
	return decodeList(gjson.Parse(v), fields)
}

// writeList keeps list under key (an empty list: deletes it).
func writeList[T any](s Shared, key string, list []T, fields func(*T, *Fields)) {
	if len(list) == 0 {
		s.Delete(key)
		return
	}
	var b jsonout.Builder
	appendList(&b, list, fields)
	s.Set(key, string(b.Bytes()))
}

// entry returns the record of list that match picks, appending fresh
// when none does. (The lists are short: a few hundred records at most.)
func entry[T any](list *[]T, match func(*T) bool, fresh T) *T {
	for i := range *list {
		if match(&(*list)[i]) {
			return &(*list)[i]
		}
	}
	*list = append(*list, fresh)
	return &(*list)[len(*list)-1]
}
