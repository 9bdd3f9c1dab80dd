package socketio_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/realtime-message/presence/internal/redistest"
	"github.com/realtime-message/presence/internal/siotest"
	"github.com/realtime-message/presence/socketio"
)

func TestHMACAuthenticator(t *testing.T) {
	secret := []byte("test-secret")
	n := startNode(t, redistest.Embedded(t), nodeConfig{Options: socketio.Options{
		Authenticator: &socketio.HMACAuthenticator{Secret: secret},
	}})
	room := "room-" + redistest.Prefix(t)
	tok, err := socketio.SignToken(secret, "alice", time.Hour)
	if err != nil {
		t.Fatal(err)
	}

	refused := func(o siotest.Options) {
		t.Helper()
		_, err := tryDial(t, n.url, o)
		var ce *siotest.ConnectError
		if !errors.As(err, &ce) || ce.Message != "unauthorized" {
			t.Fatalf("dial %+v: %v, want connect_error unauthorized", o, err)
		}
	}
	refused(siotest.Options{})
	refused(siotest.Options{Auth: map[string]any{"token": "nope"}})
	other, _ := socketio.SignToken([]byte("other-secret"), "alice", time.Hour)
	refused(siotest.Options{Auth: map[string]any{"token": other}})
	expired, _ := socketio.SignToken(secret, "alice", -time.Hour) // no exp claim: ttl ≤ 0 means none
	if _, err := socketio.VerifyToken(secret, expired, time.Now(), 0); err != nil {
		t.Fatalf("token without exp: %v", err)
	}

	// The token in auth.token, ?token= or Authorization: Bearer.
	for _, o := range []siotest.Options{
		{Auth: map[string]any{"token": tok}},
		{Query: url.Values{"token": {tok}}},
		{Header: http.Header{"Authorization": {"Bearer " + tok}}},
	} {
		c := dial(t, n.url, o)
		// Bound to alice: acting user before any join (locks work).
		c.ok("metadata:acquireLock", map[string]any{"channelName": room, "channelType": "doc", "lockName": "l", "ttlMs": 1000})
		c.ok("metadata:releaseLock", map[string]any{"channelName": room, "channelType": "doc", "lockName": "l"})
		a := c.fail("PRESENCE_CONFLICT", "presence:join", map[string]any{"roomId": room, "userId": "mallory"})
		if !strings.Contains(a["error"].(string), "authenticated user") {
			t.Fatalf("join as another user: %v", a)
		}
		c.ok("presence:join", map[string]any{"roomId": room, "userId": "alice"})
		c.ok("presence:leave")
		c.close()
	}
}

func TestVerifyToken(t *testing.T) {
	secret := []byte("k")
	now := time.Now()
	tok, _ := socketio.SignToken(secret, "u", time.Minute)
	if u, err := socketio.VerifyToken(secret, tok, now, 0); err != nil || u != "u" {
		t.Fatalf("valid token: %q %v", u, err)
	}
	if _, err := socketio.VerifyToken(secret, tok, now.Add(2*time.Minute), 0); !errors.Is(err, socketio.ErrUnauthorized) {
		t.Fatalf("expired token: %v", err)
	}
	if _, err := socketio.VerifyToken(secret, tok, now.Add(2*time.Minute), 5*time.Minute); err != nil {
		t.Fatalf("expired token within leeway: %v", err)
	}
	for _, bad := range []string{"", "a.b", "a.b.c", tok + "x", strings.Replace(tok, ".", "x.", 1)} {
		if _, err := socketio.VerifyToken(secret, bad, now, 0); !errors.Is(err, socketio.ErrUnauthorized) {
			t.Errorf("token %q: %v", bad, err)
		}
	}
	if _, err := socketio.VerifyToken(nil, tok, now, 0); err == nil {
		t.Fatal("empty secret accepted a token")
	}
	// A JWT made elsewhere (Python's hmac: HS256, sub "user-1", no exp,
	// secret "k") is accepted: any JWT library can mint tokens.
	const jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLTEifQ.6lNNkcDgNLMNNol8yykGpnwObEE22C3yLE1wZEGUdCs"
	if u, err := socketio.VerifyToken(secret, jwt, now, 0); err != nil || u != "user-1" {
		t.Fatalf("foreign JWT: %q %v", u, err)
	}
}

// TestTokenClaims: RFC 7519 dates may carry fractions, and the optional
// audience and issuer checks refuse tokens minted for someone else.
func TestTokenClaims(t *testing.T) {
	secret := []byte("k")
	now := time.Unix(1_800_000_000, 0)
	mint := func(claims jwt.MapClaims) string {
		t.Helper()
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	auth := func(a *socketio.HMACAuthenticator, tok string) (string, error) {
		a.Secret, a.Now = secret, func() time.Time { return now }
		return a.Authenticate(context.Background(), socketio.Handshake{Auth: map[string]any{"token": tok}})
	}

	frac := mint(jwt.MapClaims{"sub": "u", "exp": float64(now.Unix()) + 60.5, "nbf": float64(now.Unix()) - 0.25})
	if u, err := auth(&socketio.HMACAuthenticator{}, frac); err != nil || u != "u" {
		t.Fatalf("fractional exp/nbf: %q %v", u, err)
	}
	// 0.5s past a fractional exp is expired.
	if _, err := socketio.VerifyToken(secret, frac, now.Add(61*time.Second), 0); !errors.Is(err, socketio.ErrUnauthorized) {
		t.Fatalf("past fractional exp: %v", err)
	}

	good := mint(jwt.MapClaims{"sub": "u", "aud": []string{"other", "presence"}, "iss": "https://id.example"})
	strict := func() *socketio.HMACAuthenticator {
		return &socketio.HMACAuthenticator{Audience: "presence", Issuer: "https://id.example"}
	}
	if u, err := auth(strict(), good); err != nil || u != "u" {
		t.Fatalf("matching aud and iss: %q %v", u, err)
	}
	for name, tok := range map[string]string{
		"other aud":  mint(jwt.MapClaims{"sub": "u", "aud": "billing", "iss": "https://id.example"}),
		"no aud":     mint(jwt.MapClaims{"sub": "u", "iss": "https://id.example"}),
		"other iss":  mint(jwt.MapClaims{"sub": "u", "aud": "presence", "iss": "https://evil.example"}),
		"no iss":     mint(jwt.MapClaims{"sub": "u", "aud": "presence"}),
		"no sub":     mint(jwt.MapClaims{"aud": "presence", "iss": "https://id.example"}),
		"alg none":   must(jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"sub": "u", "aud": "presence", "iss": "https://id.example"}).SignedString(jwt.UnsafeAllowNoneSignatureType)),
		"alg HS512":  must(jwt.NewWithClaims(jwt.SigningMethodHS512, jwt.MapClaims{"sub": "u", "aud": "presence", "iss": "https://id.example"}).SignedString(secret)),
		"string exp": mint(jwt.MapClaims{"sub": "u", "aud": "presence", "iss": "https://id.example", "exp": "soon"}),
	} {
		if u, err := auth(strict(), tok); !errors.Is(err, socketio.ErrUnauthorized) {
			t.Errorf("%s: admitted as %q (%v)", name, u, err)
		}
	}
	// Without Audience or Issuer configured, aud and iss are not checked.
	if _, err := auth(&socketio.HMACAuthenticator{}, good); err != nil {
		t.Fatalf("unchecked aud/iss: %v", err)
	}

	// Sign mints what the same configuration accepts.
	a := strict()
	a.Secret = secret
	tok, err := a.Sign("alice", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	a.Now = nil
	if u, err := a.Authenticate(context.Background(), socketio.Handshake{Query: url.Values{"token": {tok}}}); err != nil || u != "alice" {
		t.Fatalf("Sign's token: %q %v", u, err)
	}
}

func must(s string, err error) string {
	if err != nil {
		panic(err)
	}
	return s
}

// TestCustomAuthenticator: a hook that reads the handshake query, admits
// unbound sockets, and refuses others.
func TestCustomAuthenticator(t *testing.T) {
	var seenPtr atomic.Pointer[socketio.Handshake]
	n := startNode(t, redistest.Embedded(t), nodeConfig{Options: socketio.Options{
		Authenticator: socketio.AuthenticatorFunc(func(ctx context.Context, h socketio.Handshake) (string, error) {
			if _, ok := ctx.Deadline(); !ok {
				return "", errors.New("no deadline")
			}
			switch h.Query.Get("userId") {
			case "":
				return "", nil // unbound: join's userId is trusted
			case "banned":
				return "", errors.New("banned")
			}
			seenPtr.Store(&h)
			return h.Query.Get("userId"), nil
		}),
	}})
	room := "room-" + redistest.Prefix(t)
	if _, err := tryDial(t, n.url, siotest.Options{Query: url.Values{"userId": {"banned"}}}); err == nil {
		t.Fatal("banned user admitted")
	}
	c := dial(t, n.url, siotest.Options{Query: url.Values{"userId": {"carol"}}, Auth: map[string]any{"x": "y"}, Header: http.Header{"X-Test": {"1"}}})
	seen := *seenPtr.Load()
	if seen.Auth["x"] != "y" || seen.Header.Get("X-Test") != "1" || seen.RemoteAddr == "" {
		t.Fatalf("handshake seen by the authenticator: %+v", seen)
	}
	c.fail("PRESENCE_CONFLICT", "presence:join", map[string]any{"roomId": room, "userId": "dave"})
	c.ok("presence:join", map[string]any{"roomId": room, "userId": "carol"})
	u := dial(t, n.url)
	u.ok("presence:join", map[string]any{"roomId": room, "userId": "anyone"})
}
