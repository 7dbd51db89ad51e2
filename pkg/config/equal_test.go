package config

import (
	"fmt"
	"net/netip"
	"reflect"
	"testing"
	"time"
)

// mutateLeaf changes the k-th leaf of v (counting from 0 in field order)
// and reports whether there was one; *k is decremented per leaf passed.
func mutateLeaf(v reflect.Value, k *int, path string) (string, bool) {
	leaf := func(set func()) (string, bool) {
		if *k == 0 {
			set()
			return path, true
		}
		*k--
		return "", false
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return leaf(func() { v.Set(reflect.New(v.Type().Elem())) })
		}
		return mutateLeaf(v.Elem(), k, path)
	case reflect.Slice:
		if p, ok := leaf(func() { v.Set(reflect.Append(v, reflect.Zero(v.Type().Elem()))) }); ok {
			return p + "(appended)", true
		}
		for i := range v.Len() {
			if p, ok := mutateLeaf(v.Index(i), k, fmt.Sprintf("%s[%d]", path, i)); ok {
				return p, true
			}
		}
		return "", false
	case reflect.Struct:
		switch x := v.Interface().(type) {
		case netip.Addr:
			return leaf(func() { v.Set(reflect.ValueOf(netip.AddrFrom4([4]byte{1, 2, 3, 4}))) })
		case netip.Prefix:
			return leaf(func() { v.Set(reflect.ValueOf(netip.MustParsePrefix("1.2.3.0/24"))) })
		case Duration:
			return leaf(func() { v.Set(reflect.ValueOf(Duration{x.Duration + time.Second})) })
		}
		for i := range v.NumField() {
			if p, ok := mutateLeaf(v.Field(i), k, path+"."+v.Type().Field(i).Name); ok {
				return p, true
			}
		}
		return "", false
	case reflect.String:
		return leaf(func() { v.SetString(v.String() + "x") })
	case reflect.Int:
		return leaf(func() { v.SetInt(v.Int() + 1) })
	case reflect.Uint16, reflect.Uint32:
		return leaf(func() { v.SetUint(v.Uint() + 1) })
	case reflect.Bool:
		return leaf(func() { v.SetBool(!v.Bool()) })
	}
	panic(fmt.Sprintf("%s: kind %s not covered by the test", path, v.Kind()))
}

// Equal agrees with reflect.DeepEqual on a config and on every copy of it
// with one leaf changed, any field of Config and Parsed included.
func TestConfigEqual(t *testing.T) {
	parse := func() *Config {
		c, err := ParseWith(readTestdata(t, "valid.yaml"), testEnv("", ""))
		if err != nil {
			t.Fatal(err)
		}
		c.Parsed.Warnings = []FieldError{{Path: "p", Reason: "m"}} // a leaf there too
		return c
	}
	a := parse()
	if !a.Equal(parse()) || !reflect.DeepEqual(a, parse()) {
		t.Fatal("two parses of one file differ")
	}
	n := 0
	for ; ; n++ {
		b := parse()
		k := n
		path, ok := mutateLeaf(reflect.ValueOf(b).Elem(), &k, "Config")
		if !ok {
			break
		}
		if a.Equal(b) || reflect.DeepEqual(a, b) {
			t.Errorf("%s changed, but Equal says %t and DeepEqual %t", path, a.Equal(b), reflect.DeepEqual(a, b))
		}
	}
	if n < 60 {
		t.Fatalf("only %d leaves mutated: the walk missed fields", n)
	}
	empty, null := parse(), parse()
	empty.Cluster.ServiceCIDRs, null.Cluster.ServiceCIDRs = []string{}, nil
	if empty.Equal(null) != reflect.DeepEqual(empty, null) {
		t.Error("empty and nil lists: Equal differs from DeepEqual")
	}
}

func BenchmarkEqual20000(b *testing.B) {
	x, _ := ParseWith(scaleDoc(20000), testEnv("", ""))
	y, _ := ParseWith(scaleDoc(20000), testEnv("", ""))
	b.Run("Equal", func(b *testing.B) {
		for b.Loop() {
			if !x.Equal(y) {
				b.Fatal("differ")
			}
		}
	})
	b.Run("DeepEqual", func(b *testing.B) {
		for b.Loop() {
			if !reflect.DeepEqual(x, y) {
				b.Fatal("differ")
			}
		}
	})
}
