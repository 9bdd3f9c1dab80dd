package adminui

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"sync"
	"time"

	"github.com/zishang520/socket.io/servers/socket/v3"
	"golang.org/x/crypto/bcrypt"
)

// errInvalidCredentials is the refusal the UI recognises: it reopens its
// login form with "invalid credentials".
const errInvalidCredentials = "invalid credentials"

// loginWait bounds how long a login waits for a free bcrypt slot.
const loginWait = 5 * time.Second

// maxSessions bounds the remembered sessions; past it the oldest goes.
const maxSessions = 1024

// adminData is an admin socket's Data: the session its login created, to
// be handed to the UI once connected. It marshals to {}, so the session id
// never shows in the UI's socket list.
type adminData struct{ newSession string }

func checkHash(hash string) error {
	if _, err := bcrypt.Cost([]byte(hash)); err != nil {
		return errors.New("adminui: the password hash is not a bcrypt hash (make one with: htpasswd -nbBC 10 '' PASSWORD | cut -c2-)")
	}
	return nil
}

// authenticate is the admin namespace's middleware: a live session id, or
// the username and password (the UI's handshake auth: {sessionId} on
// reconnection, {username, password} from its login form).
func (a *Admin) authenticate(s *socket.Socket, next func(*socket.ExtendedError)) {
	if a.opts.NoAuth {
		next(nil)
		return
	}
	auth := s.Handshake().Auth
	if sid, _ := auth["sessionId"].(string); sid != "" && a.sessions.valid(sid) {
		next(nil)
		return
	}
	user, _ := auth["username"].(string)
	pass, _ := auth["password"].(string)
	ok, err := a.checkLogin(user, pass)
	if err != nil {
		a.log.Warn("adminui: login refused", "address", s.Handshake().Address, "err", err)
		next(socket.NewExtendedError(err.Error(), nil))
		return
	}
	if !ok {
		a.log.Warn("adminui: login refused: invalid credentials", "address", s.Handshake().Address, "username", user)
		next(socket.NewExtendedError(errInvalidCredentials, nil))
		return
	}
	sid, err := a.sessions.create()
	if err != nil {
		next(socket.NewExtendedError("server error", nil))
		return
	}
	s.SetData(&adminData{newSession: sid})
	a.log.Info("adminui: login", "address", s.Handshake().Address, "username", user)
	next(nil)
}

// checkLogin compares in constant time and always runs bcrypt, so neither
// a wrong username nor a wrong password answers faster.
func (a *Admin) checkLogin(user, pass string) (bool, error) {
	t := time.NewTimer(loginWait)
	defer t.Stop()
	select {
	case a.login <- struct{}{}:
		defer func() { <-a.login }()
	case <-t.C:
		return false, errors.New("too many logins at once, try again")
	}
	userOK := subtle.ConstantTimeCompare([]byte(user), []byte(a.opts.Username)) == 1
	passOK := bcrypt.CompareHashAndPassword([]byte(a.opts.PasswordHash), []byte(pass)) == nil
	return userOK && passOK, nil
}

// sessions are the logins' session ids, in memory: a node restart or
// another node asks for the password again.
type sessions struct {
	ttl time.Duration
	max int

	mu   sync.Mutex
	byID map[string]time.Time // expiry
}

func newSessions(ttl time.Duration, max int) *sessions {
	return &sessions{ttl: ttl, max: max, byID: map[string]time.Time{}}
}

func (s *sessions) create() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	id := hex.EncodeToString(b)
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.byID) >= s.max {
		s.evict(now)
	}
	s.byID[id] = now.Add(s.ttl)
	return id, nil
}

// evict drops the expired sessions, or the one closest to expiry when none
// is.
func (s *sessions) evict(now time.Time) {
	var oldest string
	var oldestAt time.Time
	for id, exp := range s.byID {
		if !now.Before(exp) {
			delete(s.byID, id)
			continue
		}
		if oldest == "" || exp.Before(oldestAt) {
			oldest, oldestAt = id, exp
		}
	}
	if len(s.byID) >= s.max && oldest != "" {
		delete(s.byID, oldest)
	}
}

func (s *sessions) valid(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	exp, ok := s.byID[id]
	if ok && !time.Now().Before(exp) {
		delete(s.byID, id)
		return false
	}
	return ok
}
