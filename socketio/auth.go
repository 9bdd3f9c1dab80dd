package socketio

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
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
// as can SignToken and HMACAuthenticator.Sign. The claim "sub" is the user
// id; "exp" and "nbf" (RFC 7519 NumericDate: seconds, fractions allowed),
// when present, are enforced with a leeway of Leeway; "aud" and "iss" are
// checked when Audience or Issuer is set.
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
	// Audience, when set, must be one of the token's "aud" values
	// (PRESENCE_AUTH_AUDIENCE for the server): a token minted for another
	// service with the same secret is refused.
	Audience string
	// Issuer, when set, must equal the token's "iss" claim
	// (PRESENCE_AUTH_ISSUER for the server).
	Issuer string
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
	return verify(a.Secret, tok, now, a.Leeway, a.Audience, a.Issuer)
}

// Sign returns a token for user, valid for ttl (no expiry when ttl ≤ 0),
// carrying a's Audience and Issuer so that a accepts it.
func (a *HMACAuthenticator) Sign(user string, ttl time.Duration) (string, error) {
	return sign(a.Secret, user, ttl, a.Audience, a.Issuer)
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

// SignToken returns an HS256 JSON Web Token for user, valid for ttl (no
// expiry when ttl ≤ 0), that HMACAuthenticator with the same secret and
// no Audience or Issuer accepts.
func SignToken(secret []byte, user string, ttl time.Duration) (string, error) {
	return sign(secret, user, ttl, "", "")
}

func sign(secret []byte, user string, ttl time.Duration, aud, iss string) (string, error) {
	if len(secret) == 0 {
		return "", errors.New("socketio: SignToken: empty secret")
	}
	if user == "" {
		return "", errors.New("socketio: SignToken: empty user")
	}
	c := jwt.RegisteredClaims{Subject: user, Issuer: iss}
	if aud != "" {
		c.Audience = jwt.ClaimStrings{aud}
	}
	if ttl > 0 {
		c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(ttl))
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(secret)
}

// VerifyToken checks an HS256 token's signature and its exp and nbf
// claims at now, and returns its subject. It checks no audience or
// issuer; HMACAuthenticator does when configured to. Every failure wraps
// ErrUnauthorized.
func VerifyToken(secret []byte, token string, now time.Time, leeway time.Duration) (string, error) {
	return verify(secret, token, func() time.Time { return now }, leeway, "", "")
}

func verify(secret []byte, token string, now func() time.Time, leeway time.Duration, aud, iss string) (string, error) {
	if len(secret) == 0 {
		return "", fmt.Errorf("%w: no secret configured", ErrUnauthorized)
	}
	// Only HS256: accepting "none" or an RS* algorithm with the secret as
	// a public key is the classic JWT forgery.
	opts := []jwt.ParserOption{jwt.WithValidMethods([]string{"HS256"}), jwt.WithLeeway(leeway), jwt.WithTimeFunc(now)}
	if aud != "" {
		opts = append(opts, jwt.WithAudience(aud))
	}
	if iss != "" {
		opts = append(opts, jwt.WithIssuer(iss))
	}
	var c jwt.RegisteredClaims
	_, err := jwt.NewParser(opts...).ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return secret, nil })
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrUnauthorized, err)
	}
	// Without a subject the socket would be admitted unbound, trusting
	// presence:join's userId: a token must name its user.
	if c.Subject == "" {
		return "", fmt.Errorf("%w: token has no sub claim", ErrUnauthorized)
	}
	return c.Subject, nil
}
