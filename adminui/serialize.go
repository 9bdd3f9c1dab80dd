package adminui

import (
	"encoding/json"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/zishang520/socket.io/parsers/engine/v3/packet"
	"github.com/zishang520/socket.io/servers/socket/v3"
)

// socketInfo is a socket as the UI lists it (the Node.js package's
// serialize()).
type socketInfo struct {
	ID        string         `json:"id"`
	ClientID  string         `json:"clientId"`
	Transport string         `json:"transport"`
	Nsp       string         `json:"nsp"`
	Data      map[string]any `json:"data"`
	Handshake handshakeInfo  `json:"handshake"`
	Rooms     []string       `json:"rooms"`
}

type handshakeInfo struct {
	Address string            `json:"address"`
	Headers map[string]string `json:"headers"`
	Query   map[string]string `json:"query"`
	Issued  int64             `json:"issued"`
	Secure  bool              `json:"secure"`
	Time    string            `json:"time"`
	URL     string            `json:"url"`
	Xdomain bool              `json:"xdomain"`
}

// redacted replaces credentials in the handshake the UI shows: an admin
// must not learn the clients' tokens (this server takes them in the
// Authorization header and the token query parameter) or cookies.
const redacted = "[redacted]"

var secretHeaders = map[string]bool{"authorization": true, "proxy-authorization": true, "cookie": true}
var secretQuery = map[string]bool{"token": true, "access_token": true}

func serialize(s *socket.Socket, nsp string) socketInfo {
	h := s.Handshake()
	info := socketInfo{
		ID:        string(s.Id()),
		Transport: transportOf(s),
		Nsp:       nsp,
		Data:      dataOf(s),
		Rooms:     []string{},
	}
	if c := s.Conn(); c != nil {
		// The Engine.IO id is a credential of long-polling requests; the
		// UI groups a client's sockets by a prefix, as the Node.js package
		// sends.
		info.ClientID = c.Id()
		if len(info.ClientID) > 12 {
			info.ClientID = info.ClientID[:12]
		}
	}
	if h != nil {
		info.Handshake = handshakeInfo{
			Headers: map[string]string{},
			Query:   map[string]string{},
			Issued:  h.Issued,
			Secure:  h.Secure,
			Time:    h.Time,
			URL:     redactURL(h.Url),
			Xdomain: h.Xdomain,
			Address: h.Address,
		}
		for k, v := range h.Headers {
			k = strings.ToLower(k)
			info.Handshake.Headers[k] = joinValues(v)
			if secretHeaders[k] {
				info.Handshake.Headers[k] = redacted
			}
		}
		for k, v := range h.Query {
			info.Handshake.Query[k] = joinValues(v)
			if secretQuery[strings.ToLower(k)] {
				info.Handshake.Query[k] = redacted
			}
		}
		// Behind a proxy the client's address is in its headers, as the
		// Node.js package reads it.
		for _, k := range []string{"cf-connecting-ip", "x-forwarded-for"} {
			if v := info.Handshake.Headers[k]; v != "" {
				info.Handshake.Address = v
				break
			}
		}
	}
	for _, r := range s.Rooms().Keys() {
		info.Rooms = append(info.Rooms, string(r))
	}
	sort.Strings(info.Rooms)
	return info
}

func joinValues(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case []string:
		return strings.Join(v, ", ")
	}
	return ""
}

// redactURL hides credentials in the handshake URL's query.
func redactURL(raw string) string {
	path, query, ok := strings.Cut(raw, "?")
	if !ok {
		return raw
	}
	parts := strings.Split(query, "&")
	for i, p := range parts {
		k, _, _ := strings.Cut(p, "=")
		if secretQuery[strings.ToLower(k)] {
			parts[i] = k + "=" + redacted
		}
	}
	return path + "?" + strings.Join(parts, "&")
}

func transportOf(s *socket.Socket) string {
	if c := s.Conn(); c != nil {
		if t := c.Transport(); t != nil {
			return t.Name()
		}
	}
	return ""
}

// dataOf is the socket's Data as the UI shows it: its JSON object (the
// presence binding stores the authenticated userId there), or {}.
func dataOf(s *socket.Socket) map[string]any {
	out := map[string]any{}
	d := s.Data()
	if d == nil {
		return out
	}
	b, err := json.Marshal(d)
	if err != nil {
		return out
	}
	if json.Unmarshal(b, &out) != nil || out == nil {
		return map[string]any{}
	}
	return out
}

// allSockets lists the sockets of every namespace of this node, at most
// Options.MaxListedSockets of them.
func (a *Admin) allSockets() []socketInfo {
	out := []socketInfo{}
	total := 0
	for _, n := range a.namespaces() {
		name := n.Name()
		n.Sockets().Range(func(_ socket.SocketId, s *socket.Socket) bool {
			total++
			if len(out) < a.opts.MaxListedSockets {
				out = append(out, serialize(s, name))
			}
			return true
		})
	}
	if total > len(out) {
		a.log.Info("adminui: the admin's socket list is cut", "listed", len(out), "sockets", total)
	}
	return out
}

type namespaceStats struct {
	Name         string `json:"name"`
	SocketsCount int    `json:"socketsCount"`
}

type serverStats struct {
	ServerID            string           `json:"serverId"`
	Hostname            string           `json:"hostname"`
	Pid                 int              `json:"pid"`
	Uptime              float64          `json:"uptime"` // seconds
	ClientsCount        uint64           `json:"clientsCount"`
	PollingClientsCount int64            `json:"pollingClientsCount"`
	AggregatedEvents    []aggregateEvent `json:"aggregatedEvents"`
	Namespaces          []namespaceStats `json:"namespaces"`
}

// stats are the server_stats event; drain takes the counters since the
// last drain.
func (a *Admin) stats(drain bool) serverStats {
	st := serverStats{
		ServerID:            a.opts.ServerID,
		Hostname:            a.hostname,
		Pid:                 os.Getpid(),
		Uptime:              time.Since(a.started).Seconds(),
		PollingClientsCount: max(a.polling.Load(), 0),
		AggregatedEvents:    []aggregateEvent{},
		Namespaces:          []namespaceStats{},
	}
	if e := a.io.Engine(); e != nil {
		st.ClientsCount = e.ClientsCount()
	}
	if drain {
		st.AggregatedEvents = a.counters.drain()
	}
	for _, n := range a.namespaces() {
		st.Namespaces = append(st.Namespaces, namespaceStats{Name: n.Name(), SocketsCount: n.Sockets().Len()})
	}
	sort.Slice(st.Namespaces, func(i, j int) bool { return st.Namespaces[i].Name < st.Namespaces[j].Name })
	return st
}

// aggregateEvent is one counter of one second (the UI's charts).
type aggregateEvent struct {
	Timestamp int64  `json:"timestamp"` // Unix milliseconds, whole second
	Type      string `json:"type"`
	SubType   string `json:"subType,omitempty"`
	Count     int64  `json:"count"`
}

type counterKey struct {
	second       int64
	typ, subType string
}

// counters sum events per second until drained.
type counters struct {
	mu sync.Mutex
	m  map[counterKey]int64
}

func (c *counters) add(typ, subType string, n int64) {
	k := counterKey{second: time.Now().Unix(), typ: typ, subType: subType}
	c.mu.Lock()
	if c.m == nil {
		c.m = map[counterKey]int64{}
	}
	c.m[k] += n
	c.mu.Unlock()
}

// packet counts one Engine.IO packet event's packet and its bytes, for
// packets that carry data (as the Node.js package: pings do not count).
func (c *counters) packet(args []any, packets, bytes string) {
	p, ok := first[*packet.Packet](args)
	if !ok || p == nil || p.Data == nil {
		return
	}
	c.add(packets, "", 1)
	// The engine's buffers report their unread length; reading would
	// consume the packet.
	if l, ok := p.Data.(interface{ Len() int }); ok {
		c.add(bytes, "", int64(l.Len()))
	}
}

func (c *counters) drain() []aggregateEvent {
	c.mu.Lock()
	m := c.m
	c.m = nil
	c.mu.Unlock()
	out := make([]aggregateEvent, 0, len(m))
	for k, n := range m {
		out = append(out, aggregateEvent{Timestamp: k.second * 1000, Type: k.typ, SubType: k.subType, Count: n})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Timestamp != out[j].Timestamp {
			return out[i].Timestamp < out[j].Timestamp
		}
		return out[i].Type+out[i].SubType < out[j].Type+out[j].SubType
	})
	return out
}
