package api

import "time"

// PathHealth is the data-path health of the node (status "pathHealth"):
// what its probes measured on the way to each target. Health does not
// make the node unready: ready means weft's objects are in place; the
// conditions GatewayReachable and RemotesReachable say whether packets
// get through.
type PathHealth struct {
	At time.Time `json:"at"`
	// Protocol is what the probes are: icmp (echo requests) or udp.
	Protocol       string       `json:"protocol"`
	IntervalMs     float64      `json:"intervalMs"`
	FastIntervalMs float64      `json:"fastIntervalMs"`
	LossThreshold  int          `json:"lossThreshold"`
	Targets        []PathTarget `json:"targets"`
}

// PathTarget is one probed target.
type PathTarget struct {
	Name    string    `json:"name"` // gateway/<node>, remote/<cluster>, cable/<cluster>
	Hop     string    `json:"hop"`  // node-to-gateway | node-to-remote | gateway-to-remote-gateway
	Cluster string    `json:"cluster"`
	Node    string    `json:"node,omitempty"`
	Address string    `json:"address"` // addr:port (udp) or addr (icmp)
	Source  string    `json:"source,omitempty"`
	Up      bool      `json:"up"`
	Since   time.Time `json:"since"`
	RTT     PathRTT   `json:"rtt"`
	Sent    uint64    `json:"sent"`
	Lost    uint64    `json:"lost"`
	Message string    `json:"message,omitempty"`
}

// PathRTT is the round-trip time over the probe window, in milliseconds.
type PathRTT struct {
	LastMs   float64 `json:"lastMs"`
	MinMs    float64 `json:"minMs"`
	MeanMs   float64 `json:"meanMs"`
	MaxMs    float64 `json:"maxMs"`
	StdDevMs float64 `json:"stdDevMs"`
}
