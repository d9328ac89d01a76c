package tokenizer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The chat templates print tools and arguments with transformers' tojson
// filter, which is Python's json.dumps(x, ensure_ascii=False): ", " and ": "
// separators, dict keys in insertion order, non-ASCII characters unescaped,
// floats in Python repr. pyValue keeps a JSON document in that shape.

type pyKind uint8

const (
	pyNull pyKind = iota
	pyBool
	pyInt
	pyFloat
	pyString
	pyArray
	pyObject
)

type pyValue struct {
	kind pyKind
	b    bool
	num  string // pyInt: the literal; pyFloat: the literal
	str  string
	arr  []pyValue
	obj  []pyMember
}

type pyMember struct {
	key string
	val pyValue
}

// pyJSON re-prints a JSON document as Python's json.dumps would.
func pyJSON(raw json.RawMessage) (string, error) {
	v, err := parsePy(raw)
	if err != nil {
		return "", err
	}
	return string(v.appendJSON(nil)), nil
}

func parsePy(raw []byte) (pyValue, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	v, err := decodePy(dec)
	if err != nil {
		return pyValue{}, fmt.Errorf("invalid JSON: %w", err)
	}
	if _, err := dec.Token(); err == nil {
		return pyValue{}, errors.New("invalid JSON: trailing data")
	}
	return v, nil
}

func decodePy(dec *json.Decoder) (pyValue, error) {
	tok, err := dec.Token()
	if err != nil {
		return pyValue{}, err
	}
	switch t := tok.(type) {
	case nil:
		return pyValue{kind: pyNull}, nil
	case bool:
		return pyValue{kind: pyBool, b: t}, nil
	case json.Number:
		if strings.ContainsAny(string(t), ".eE") {
			return pyValue{kind: pyFloat, num: string(t)}, nil
		}
		return pyValue{kind: pyInt, num: string(t)}, nil
	case string:
		return pyValue{kind: pyString, str: t}, nil
	case json.Delim:
		if t == '[' {
			v := pyValue{kind: pyArray}
			for dec.More() {
				elem, err := decodePy(dec)
				if err != nil {
					return pyValue{}, err
				}
				v.arr = append(v.arr, elem)
			}
			_, err := dec.Token()
			return v, err
		}
		v := pyValue{kind: pyObject}
		for dec.More() {
			keyTok, err := dec.Token()
			if err != nil {
				return pyValue{}, err
			}
			key := keyTok.(string)
			val, err := decodePy(dec)
			if err != nil {
				return pyValue{}, err
			}
			// A repeated key keeps its first position and takes the last
			// value, as a Python dict does.
			replaced := false
			for i := range v.obj {
				if v.obj[i].key == key {
					v.obj[i].val, replaced = val, true
					break
				}
			}
			if !replaced {
				v.obj = append(v.obj, pyMember{key, val})
			}
		}
		_, err := dec.Token()
		return v, err
	}
	return pyValue{}, fmt.Errorf("unexpected token %v", tok)
}

func (v pyValue) appendJSON(dst []byte) []byte {
	switch v.kind {
	case pyNull:
		return append(dst, "null"...)
	case pyBool:
		if v.b {
			return append(dst, "true"...)
		}
		return append(dst, "false"...)
	case pyInt:
		return append(dst, pyIntLiteral(v.num)...)
	case pyFloat:
		f, _ := strconv.ParseFloat(v.num, 64)
		switch {
		case math.IsInf(f, 1):
			return append(dst, "Infinity"...)
		case math.IsInf(f, -1):
			return append(dst, "-Infinity"...)
		}
		return append(dst, pyFloatRepr(f)...)
	case pyString:
		return appendPyQuoted(dst, v.str)
	case pyArray:
		dst = append(dst, '[')
		for i, e := range v.arr {
			if i > 0 {
				dst = append(dst, ", "...)
			}
			dst = e.appendJSON(dst)
		}
		return append(dst, ']')
	}
	dst = append(dst, '{')
	for i, m := range v.obj {
		if i > 0 {
			dst = append(dst, ", "...)
		}
		dst = appendPyQuoted(dst, m.key)
		dst = append(dst, ": "...)
		dst = m.val.appendJSON(dst)
	}
	return append(dst, '}')
}

// pyStr is Python's str() of a scalar (Jinja's string filter).
func (v pyValue) pyStr() string {
	switch v.kind {
	case pyNull:
		return "None"
	case pyBool:
		if v.b {
			return "True"
		}
		return "False"
	case pyInt:
		return pyIntLiteral(v.num)
	case pyFloat:
		f, _ := strconv.ParseFloat(v.num, 64)
		switch {
		case math.IsInf(f, 1):
			return "inf"
		case math.IsInf(f, -1):
			return "-inf"
		}
		return pyFloatRepr(f)
	case pyString:
		return v.str
	}
	return string(v.appendJSON(nil))
}

// pyIntLiteral normalizes an integer literal as Python's int would print it.
func pyIntLiteral(lit string) string {
	if lit == "-0" {
		return "0"
	}
	return lit
}

// pyFloatRepr is Python's repr(float): the shortest round-tripping digits, in
// fixed notation when the decimal exponent is in [-4, 16), else as d.ddde±XX.
func pyFloatRepr(f float64) string {
	if f == 0 {
		if math.Signbit(f) {
			return "-0.0"
		}
		return "0.0"
	}
	e := strconv.FormatFloat(f, 'e', -1, 64) // [-]d[.ddd]e±XX
	sign := ""
	if e[0] == '-' {
		sign, e = "-", e[1:]
	}
	mant, expStr, _ := strings.Cut(e, "e")
	exp, _ := strconv.Atoi(expStr)
	digits := strings.Replace(mant, ".", "", 1)
	if exp < -4 || exp >= 16 {
		m := digits[:1]
		if len(digits) > 1 {
			m += "." + digits[1:]
		}
		es := "+"
		if exp < 0 {
			es, exp = "-", -exp
		}
		return fmt.Sprintf("%s%se%s%02d", sign, m, es, exp)
	}
	var s string
	switch {
	case exp < 0:
		s = "0." + strings.Repeat("0", -exp-1) + digits
	case exp+1 >= len(digits):
		s = digits + strings.Repeat("0", exp+1-len(digits)) + ".0"
	default:
		s = digits[:exp+1] + "." + digits[exp+1:]
	}
	return sign + s
}

// appendPyQuoted quotes s as json.dumps(ensure_ascii=False) does: only '"',
// '\\' and control characters below U+0020 are escaped.
func appendPyQuoted(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			dst = utf8.AppendRune(dst, r)
			i += size
			continue
		}
		switch c {
		case '"':
			dst = append(dst, `\"`...)
		case '\\':
			dst = append(dst, `\\`...)
		case '\n':
			dst = append(dst, `\n`...)
		case '\r':
			dst = append(dst, `\r`...)
		case '\t':
			dst = append(dst, `\t`...)
		case '\b':
			dst = append(dst, `\b`...)
		case '\f':
			dst = append(dst, `\f`...)
		default:
			if c < 0x20 {
				dst = fmt.Appendf(dst, `\u%04x`, c)
			} else {
				dst = append(dst, c)
			}
		}
		i++
	}
	return append(dst, '"')
}
