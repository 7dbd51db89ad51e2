package dataplane

import (
	"fmt"

	"github.com/vishvananda/netlink"
)

// SubmarinerDevice is the VXLAN device of Submariner's route agent. Its
// defaults (UDP 4800, VNI 100) are weft's too.
const SubmarinerDevice = "vx-submariner"

// ConflictError says that a VXLAN device weft does not own holds the VNI
// and UDP port of one of weft's devices. The kernel refuses a second device
// with the same VNI and port in a namespace, and weft does not fight for
// it: it neither creates its device (nor its routes) nor touches the other
// one, and reports this until one of them changes.
type ConflictError struct {
	Device  string // weft's device, as configured
	Foreign string // the device holding the VNI and port
	VNI     uint32
	Port    uint16
	// External: the foreign device is flow based (collect metadata) and
	// takes every VNI on the port; the kernel then refuses to bring weft's
	// device up on it whatever its VNI.
	External bool
}

func (e *ConflictError) Error() string {
	who := "a VXLAN device weft does not own"
	if e.Foreign == SubmarinerDevice {
		who = "Submariner's route agent's VXLAN device"
	}
	uses := fmt.Sprintf("uses the same VNI %d and UDP port %d", e.VNI, e.Port)
	if e.External {
		uses = fmt.Sprintf("takes every VNI on UDP port %d (external)", e.Port)
	}
	return fmt.Sprintf("device %s: %s %s %s; weft leaves it alone and does not create %s",
		e.Device, who, e.Foreign, uses, e.Device)
}

// Fix is what an operator does about it.
func (e *ConflictError) Fix() string {
	change := fmt.Sprintf("give weft another port or VNI (vxlan.port / vxlan.vni for %s, cableVxlan.* for the cable device, the same on every node of the cluster)", e.Device)
	if e.Foreign == SubmarinerDevice {
		return "stop Submariner's route agent on this node (README: \"Replacing Submariner's route agent\"), or " + change
	}
	return "remove or reconfigure " + e.Foreign + ", or " + change
}

// conflict returns the foreign VXLAN device in links that holds d's VNI and
// port, or nil. It matters only while d does not exist: a device that came
// up first keeps its port (the kernel refuses the newcomer), and weft does
// not take its own device down over it. A device named d.Name is weft's to
// repair, whoever made it; devices carrying DeviceAlias are weft's.
func conflict(links []netlink.Link, d VXLAN) *ConflictError {
	for _, l := range links {
		if l.Attrs().Name == d.Name {
			return nil
		}
	}
	for _, l := range links {
		v, ok := l.(*netlink.Vxlan)
		if !ok || v.Name == d.Name || v.Alias == DeviceAlias {
			continue
		}
		if uint16(v.Port) == d.Port && (v.FlowBased || uint32(v.VxlanId) == d.VNI) {
			return &ConflictError{Device: d.Name, Foreign: v.Name, VNI: d.VNI, Port: d.Port, External: v.FlowBased}
		}
	}
	return nil
}

// ForeignVXLAN is a VXLAN device weft does not own, as the kernel shows it.
type ForeignVXLAN struct {
	Name     string
	VNI      uint32 // 0 for an external device
	Port     uint16
	External bool
}

// findSubmariner returns Submariner's route agent's device, if present.
func findSubmariner(links []netlink.Link) *ForeignVXLAN {
	for _, l := range links {
		if v, ok := l.(*netlink.Vxlan); ok && v.Name == SubmarinerDevice && v.Alias != DeviceAlias {
			return &ForeignVXLAN{Name: v.Name, VNI: uint32(v.VxlanId), Port: uint16(v.Port), External: v.FlowBased}
		}
	}
	return nil
}

// Submariner reports Submariner's route agent's VXLAN device as the last
// Apply found it, whatever its VNI and port: two route agents on one node
// both route its traffic to the remote clusters, even when their devices
// do not collide.
func (m *Netlink) Submariner() (ForeignVXLAN, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.submariner == nil {
		return ForeignVXLAN{}, false
	}
	return *m.submariner, true
}
