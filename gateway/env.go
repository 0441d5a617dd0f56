package gateway

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// ApplyEnv overrides config keys from environment entries ("KEY=value").
// The variable of a key is CMX_ followed by its YAML path in upper case,
// joined by underscores: CMX_PARTY, CMX_NATS_URL, CMX_NATS_EMBEDDED_STORE_DIR,
// CMX_AGENCIES_0_TOKEN (list elements by index). Lists of strings take
// comma-separated values. Unknown CMX_ variables are errors, so a typo never
// passes silently.
func ApplyEnv(cfg *Config, environ []string) error {
	vars := map[string]string{}
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if ok && strings.HasPrefix(k, "CMX_") && !ignoredEnv[k] {
			vars[k] = v
		}
	}
	if len(vars) == 0 {
		return nil
	}
	var errs []error
	applyEnv(reflect.ValueOf(cfg).Elem(), "CMX", vars, &errs)
	for k := range vars {
		errs = append(errs, fmt.Errorf("environment: %s names no config key", k))
	}
	return errors.Join(errs...)
}

// ignoredEnv are CMX_ variables that are not config keys.
var ignoredEnv = map[string]bool{"CMX_REQUIRE_INTEROP": true, "CMX_URL": true, "CMX_TOKEN": true, "CMX_CONFIG": true}

func applyEnv(v reflect.Value, prefix string, vars map[string]string, errs *[]error) {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if tag == "" || tag == "-" || !f.IsExported() {
			continue
		}
		name := prefix + "_" + strings.ToUpper(tag)
		fv := v.Field(i)
		switch {
		case fv.Kind() == reflect.Struct && fv.Type() != reflect.TypeOf(time.Time{}):
			applyEnv(fv, name, vars, errs)
		case fv.Kind() == reflect.Slice && fv.Type().Elem().Kind() == reflect.Struct:
			for j := range fv.Len() {
				applyEnv(fv.Index(j), name+"_"+strconv.Itoa(j), vars, errs)
			}
		default:
			s, ok := vars[name]
			if !ok {
				continue
			}
			delete(vars, name)
			if err := setScalar(fv, s); err != nil {
				*errs = append(*errs, fmt.Errorf("environment: %s: %w", name, err))
			}
		}
	}
}

func setScalar(v reflect.Value, s string) error {
	switch {
	case v.Type() == reflect.TypeOf(time.Duration(0)):
		d, err := time.ParseDuration(s)
		v.SetInt(int64(d))
		return err
	case v.Type() == reflect.TypeOf(time.Time{}):
		t, err := time.Parse(time.RFC3339, s)
		v.Set(reflect.ValueOf(t))
		return err
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		v.SetBool(b)
		return err
	case reflect.Int, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(s, 10, 64)
		v.SetInt(n)
		return err
	case reflect.Float64:
		f, err := strconv.ParseFloat(s, 64)
		v.SetFloat(f)
		return err
	case reflect.Slice:
		if v.Type().Elem().Kind() != reflect.String {
			return errors.New("unsupported list type")
		}
		parts := strings.Split(s, ",")
		for i := range parts {
			parts[i] = strings.TrimSpace(parts[i])
		}
		v.Set(reflect.ValueOf(parts))
	default:
		return fmt.Errorf("unsupported kind %s", v.Kind())
	}
	return nil
}
