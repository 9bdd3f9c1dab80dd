package main

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/realtime-message/presence/internal/siotest"
)

// TestAdminUISettings: the admin UI is refused without a login, with a
// hash that is not bcrypt, and with both a login and -admin-ui-no-auth;
// flags and variables fill its options.
func TestAdminUISettings(t *testing.T) {
	h, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"PRESENCE_ADMIN_UI", "PRESENCE_ADMIN_UI_USER", "PRESENCE_ADMIN_UI_PASSWORD_HASH", "PRESENCE_ADMIN_UI_NO_AUTH",
		"PRESENCE_ADMIN_UI_READONLY", "PRESENCE_ADMIN_UI_MODE", "PRESENCE_ADMIN_UI_MESSAGES"} {
		t.Setenv(k, "")
	}
	for name, c := range map[string]struct {
		env  map[string]string
		args []string
	}{
		"no login":          {env: map[string]string{"PRESENCE_ADMIN_UI": "1"}},
		"no hash":           {env: map[string]string{"PRESENCE_ADMIN_UI": "1", "PRESENCE_ADMIN_UI_USER": "admin"}},
		"plain password":    {env: map[string]string{"PRESENCE_ADMIN_UI": "1", "PRESENCE_ADMIN_UI_USER": "admin", "PRESENCE_ADMIN_UI_PASSWORD_HASH": "pw"}},
		"login and no-auth": {env: map[string]string{"PRESENCE_ADMIN_UI_USER": "admin", "PRESENCE_ADMIN_UI_PASSWORD_HASH": string(h)}, args: []string{"-admin-ui", "-admin-ui-no-auth"}},
		"unknown mode":      {env: map[string]string{"PRESENCE_ADMIN_UI_NO_AUTH": "1"}, args: []string{"-admin-ui", "-admin-ui-mode", "debug"}},
		"not a boolean":     {env: map[string]string{"PRESENCE_ADMIN_UI": "yes please"}},
	} {
		t.Run(name, func(t *testing.T) {
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			if _, err := loadSettings(c.args, io.Discard); err == nil || !strings.Contains(err.Error(), "ADMIN_UI") {
				t.Fatalf("accepted, or an error not naming the setting: %v", err)
			}
		})
	}

	t.Setenv("PRESENCE_ADMIN_UI", "1")
	t.Setenv("PRESENCE_ADMIN_UI_USER", "admin")
	t.Setenv("PRESENCE_ADMIN_UI_PASSWORD_HASH", string(h))
	t.Setenv("PRESENCE_ADMIN_UI_READONLY", "true")
	s, err := loadSettings([]string{"-admin-ui-mode", "production"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	o := s.AdminUIOptions
	if !s.AdminUI || o.Username != "admin" || o.PasswordHash != string(h) || !o.ReadOnly || o.Mode != "production" || o.NoAuth {
		t.Fatalf("settings: %+v", s)
	}
}

// TestAdminUIOffByDefault: a server started without PRESENCE_ADMIN_UI has
// no /admin namespace; with it, the namespace asks for the login.
func TestAdminUIOffByDefault(t *testing.T) {
	p := startServer(t)
	_, err := siotest.Dial(context.Background(), p.url, siotest.Options{Namespace: "/admin", Auth: map[string]any{"username": "admin", "password": "pw"}})
	var ce *siotest.ConnectError
	if !errors.As(err, &ce) || ce.Message != "Invalid namespace" {
		t.Fatalf("/admin without PRESENCE_ADMIN_UI: %v, want connect_error Invalid namespace", err)
	}

	h, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	p = startServer(t, "PRESENCE_ADMIN_UI=1", "PRESENCE_ADMIN_UI_USER=admin", "PRESENCE_ADMIN_UI_PASSWORD_HASH="+string(h))
	if _, err := siotest.Dial(context.Background(), p.url, siotest.Options{Namespace: "/admin", Auth: map[string]any{"username": "admin", "password": "wrong"}}); !errors.As(err, &ce) || ce.Message != "invalid credentials" {
		t.Fatalf("wrong password: %v", err)
	}
	c, err := siotest.Dial(context.Background(), p.url, siotest.Options{Namespace: "/admin", Auth: map[string]any{"username": "admin", "password": "pw"}})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

// TestHashPassword: -hash-password prints a bcrypt hash of stdin's first
// line that the admin UI's login accepts.
func TestHashPassword(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-hash-password")
	cmd.Env = serverEnv()
	cmd.Stdin = strings.NewReader("correct horse\n")
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	hash := strings.TrimSpace(string(out))
	if err := bcrypt.CompareHashAndPassword([]byte(hash), []byte("correct horse")); err != nil {
		t.Fatalf("hash %q of \"correct horse\": %v", hash, err)
	}
	cmd = exec.Command(os.Args[0], "-hash-password")
	cmd.Env = serverEnv()
	cmd.Stdin = strings.NewReader("")
	if err := cmd.Run(); err == nil {
		t.Fatal("-hash-password with an empty stdin succeeded")
	}
}
