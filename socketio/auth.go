package socketio

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Handshake is what a client sent when it connected, as an Authenticator
// sees it.
type Handshake struct {
	// Query holds the handshake URL's query parameters (socket.io-client's
	// `query` option, e.g. ?userId=...&token=...).
	Query url.Values
	// Auth is socket.io-client's `auth` option (the CONNECT packet's data).
	Auth map[string]any
	// Header holds the HTTP headers of the request that opened the
	// connection.
	Header http.Header
	// RemoteAddr is the client's address.
	RemoteAddr string
}

// Authenticator decides who a connecting socket is. It runs once per
// socket, before any event is handled.
//
// It returns the user the socket is bound to: presence:join for another
// user id is then refused, and this user is the acting user for metadata
// and locks from the first event on. An empty user id with a nil error
// admits the socket unbound: presence:join's userId is trusted, as when no
// Authenticator is set. A non-nil error refuses the connection: the client
// gets a connect_error whose message is "unauthorized" (the error itself is
// logged, never sent).
//
// Implementations must be safe for concurrent use and should honour ctx,
// which carries Options.CallTimeout.
type Authenticator interface {
	Authenticate(ctx context.Context, h Handshake) (userID string, err error)
}

// AuthenticatorFunc adapts a function to Authenticator.
type AuthenticatorFunc func(ctx context.Context, h Handshake) (string, error)

// Authenticate calls f.
func (f AuthenticatorFunc) Authenticate(ctx context.Context, h Handshake) (string, error) {
	return f(ctx, h)
}

// ErrUnauthorized is returned by the built-in authenticators when a token
// is missing, malformed, badly signed or expired.
var ErrUnauthorized = errors.New("socketio: unauthorized")

// HMACAuthenticator verifies tokens signed with a shared secret: JSON Web
// Tokens with alg HS256 (HMAC-SHA256), so any JWT library can mint them,
// as can SignToken. The claim "sub" is the user id; "exp" and "nbf" (Unix
// seconds), when present, are enforced with a leeway of Leeway.
//
// The token is taken from, in order: the handshake's auth.token
// (socket.io-client's `auth: {token}`), the query parameter "token", or an
// "Authorization: Bearer <token>" header. A socket without a valid token is
// refused.
type HMACAuthenticator struct {
	// Secret is the shared HMAC key (PRESENCE_AUTH_SECRET for the server).
	// It must not be empty; use 32 random bytes or more.
	Secret []byte
	// Leeway tolerates clock skew on exp and nbf (default 0).
	Leeway time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

var _ Authenticator = (*HMACAuthenticator)(nil)

// Authenticate implements Authenticator.
func (a *HMACAuthenticator) Authenticate(_ context.Context, h Handshake) (string, error) {
	tok := TokenFromHandshake(h)
	if tok == "" {
		return "", fmt.Errorf("%w: no token in auth.token, ?token= or Authorization: Bearer", ErrUnauthorized)
	}
	now := time.Now
	if a.Now != nil {
		now = a.Now
	}
	return VerifyToken(a.Secret, tok, now(), a.Leeway)
}

// TokenFromHandshake returns the token a client sent: auth.token, the
// query parameter "token", or an Authorization: Bearer header.
func TokenFromHandshake(h Handshake) string {
	if t, ok := h.Auth["token"].(string); ok && t != "" {
		return t
	}
	if t := h.Query.Get("token"); t != "" {
		return t
	}
	if v, ok := strings.CutPrefix(h.Header.Get("Authorization"), "Bearer "); ok {
		return strings.TrimSpace(v)
	}
	return ""
}

type tokenHeader struct {
	Alg string `json:"alg"`
	Typ string `json:"typ,omitempty"`
}

type tokenClaims struct {
	Sub string `json:"sub"`
	Exp *int64 `json:"exp,omitempty"`
	Nbf *int64 `json:"nbf,omitempty"`
}

var b64 = base64.RawURLEncoding

// SignToken returns an HS256 JSON Web Token for user, valid for ttl (no
// expiry when ttl ≤ 0), that HMACAuthenticator with the same secret
// accepts.
func SignToken(secret []byte, user string, ttl time.Duration) (string, error) {
	if len(secret) == 0 {
		return "", errors.New("socketio: SignToken: empty secret")
	}
	if user == "" {
		return "", errors.New("socketio: SignToken: empty user")
	}
	hdr, _ := json.Marshal(tokenHeader{Alg: "HS256", Typ: "JWT"})
	c := tokenClaims{Sub: user}
	if ttl > 0 {
		exp := time.Now().Add(ttl).Unix()
		c.Exp = &exp
	}
	claims, _ := json.Marshal(c)
	signing := b64.EncodeToString(hdr) + "." + b64.EncodeToString(claims)
	return signing + "." + b64.EncodeToString(sign(secret, signing)), nil
}

func sign(secret []byte, signing string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(signing))
	return m.Sum(nil)
}

// VerifyToken checks an HS256 token's signature and its exp and nbf
// claims at now, and returns its subject. Every failure wraps
// ErrUnauthorized.
func VerifyToken(secret []byte, token string, now time.Time, leeway time.Duration) (string, error) {
	if len(secret) == 0 {
		return "", fmt.Errorf("%w: no secret configured", ErrUnauthorized)
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return "", fmt.Errorf("%w: malformed token", ErrUnauthorized)
	}
	sig, err := b64.DecodeString(parts[2])
	if err != nil || !hmac.Equal(sig, sign(secret, parts[0]+"."+parts[1])) {
		return "", fmt.Errorf("%w: bad signature", ErrUnauthorized)
	}
	var hdr tokenHeader
	if raw, err := b64.DecodeString(parts[0]); err != nil || json.Unmarshal(raw, &hdr) != nil || hdr.Alg != "HS256" {
		return "", fmt.Errorf("%w: token header must say alg HS256", ErrUnauthorized)
	}
	var c tokenClaims
	if raw, err := b64.DecodeString(parts[1]); err != nil || json.Unmarshal(raw, &c) != nil {
		return "", fmt.Errorf("%w: malformed claims", ErrUnauthorized)
	}
	if c.Sub == "" {
		return "", fmt.Errorf("%w: token has no sub claim", ErrUnauthorized)
	}
	if c.Exp != nil && now.After(time.Unix(*c.Exp, 0).Add(leeway)) {
		return "", fmt.Errorf("%w: token expired", ErrUnauthorized)
	}
	if c.Nbf != nil && now.Add(leeway).Before(time.Unix(*c.Nbf, 0)) {
		return "", fmt.Errorf("%w: token not valid yet", ErrUnauthorized)
	}
	return c.Sub, nil
}
