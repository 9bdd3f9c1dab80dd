package embedded_test

import (
	"bufio"
	"fmt"
	"log"
	"net"

	"github.com/realtime-message/presence/embedded"
)

func Example() {
	srv, err := embedded.Start()
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()

	// Any Redis client can connect to srv.Addr(); here, raw RESP.
	conn, err := net.Dial("tcp", srv.Addr())
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprint(conn, "*1\r\n$4\r\nPING\r\n")
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%q\n", line)
	// Output: "+PONG\r\n"
}
