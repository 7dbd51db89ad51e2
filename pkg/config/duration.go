package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
)

// UnmarshalJSON accepts only a Go duration string such as "30s". A bare
// number is refused on purpose: "30" would silently mean 30ns.
func (d *Duration) UnmarshalJSON(b []byte) error {
	if bytes.Equal(b, []byte("null")) {
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("%s is not a duration (write it as a string such as \"30s\")", b)
	}
	v, err := parseDuration(s)
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// MarshalJSON writes the duration in the same form UnmarshalJSON reads.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(d.Duration.String())
}

func parseDuration(s string) (time.Duration, error) {
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration (examples: \"30s\", \"1m30s\")", s)
	}
	return v, nil
}
