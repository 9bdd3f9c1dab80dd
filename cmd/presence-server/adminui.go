package main

import (
	"log/slog"

	"github.com/zishang520/socket.io/servers/socket/v3"

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
