package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/zishang520/socket.io/servers/socket/v3"
	"golang.org/x/crypto/bcrypt"

	"github.com/realtime-message/presence/adminui"
	"github.com/realtime-message/presence/socketio"
)

// provideAdminUI adds the official Socket.IO Admin UI's namespace, /admin,
// when the settings ask for it (nil otherwise). It takes the binding so it
// runs after Bind, whose connect gate then serves admin sockets too.
func provideAdminUI(io *socket.Server, _ *socketio.Binding, s Settings, log *slog.Logger) (*adminui.Admin, func(), error) {
	if !s.AdminUI {
		return nil, func() {}, nil
	}
	o := s.AdminUIOptions
	o.Logger = log
	a, err := adminui.Instrument(io, o)
	if err != nil {
		return nil, nil, err
	}
	mode := o.Mode
	if mode == "" {
		mode = adminui.Development
	}
	if o.NoAuth {
		log.Warn("admin UI: /admin namespace WITHOUT a login (PRESENCE_ADMIN_UI_NO_AUTH): anyone who reaches this server sees every socket and can disconnect them",
			"mode", mode, "readonly", o.ReadOnly)
	} else {
		log.Info("admin UI: /admin namespace; log in as "+o.Username+" (bcrypt password hash)",
			"mode", mode, "readonly", o.ReadOnly, "messages", o.Messages)
	}
	return a, a.Close, nil
}

// hashPassword reads a password (its first line) and prints its bcrypt
// hash, for PRESENCE_ADMIN_UI_PASSWORD_HASH.
func hashPassword(in io.Reader, stdout, stderr io.Writer) int {
	line, err := bufio.NewReader(io.LimitReader(in, 1024)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		fmt.Fprintln(stderr, "presence-server: read the password:", err)
		return 2
	}
	pw := strings.TrimRight(line, "\r\n")
	if pw == "" {
		fmt.Fprintln(stderr, "presence-server: -hash-password reads the password from stdin; it was empty")
		return 2
	}
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.DefaultCost)
	if err != nil {
		fmt.Fprintln(stderr, "presence-server:", err)
		return 2
	}
	fmt.Fprintln(stdout, string(h))
	return 0
}
