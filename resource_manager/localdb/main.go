// Command rm-localdb serves a MongoDB-compatible database (FerretDB) on a
// loopback address, for development, tests and small installations of
// ResourceManager. Its storage is a PostgreSQL server that our launcher runs
// (-handler postgresql, the default), or SQLite files in a directory
// (-handler sqlite, the former default, kept to migrate old data).
//
// It prints one line "ready <mongodb-uri>" on stdout once it accepts
// connections, and stops cleanly on SIGINT or SIGTERM.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"syscall"

	"github.com/FerretDB/FerretDB/build/version"
	"github.com/FerretDB/FerretDB/ferretdb"
)

// ferretdbModule is the module whose version buildInfo reports as ferretdbVersion.
const ferretdbModule = "github.com/FerretDB/FerretDB"

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "loopback host:port to listen on (port 0 picks a free one)")
	handler := flag.String("handler", "postgresql", "storage: postgresql or sqlite")
	pgURL := flag.String("postgresql-url", "", "PostgreSQL connection string (required for -handler postgresql)")
	dataDir := flag.String("data-dir", "", "directory for the SQLite files (required for -handler sqlite)")
	logLevel := flag.String("log-level", "warn", "debug, info, warn or error")
	flag.Parse()

	if err := run(*listen, *handler, *pgURL, *dataDir, *logLevel); err != nil {
		fmt.Fprintln(os.Stderr, "rm-localdb:", err)
		os.Exit(1)
	}
}

func run(listen, handler, pgURL, dataDir, logLevel string) error {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("bad -listen %q: %w", listen, err)
	}
	// Never reachable from another machine: development data has no authentication.
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("-listen must be a loopback IP address, not %q", host)
	}
	config := ferretdb.Config{Listener: ferretdb.ListenerConfig{TCP: listen}, Handler: handler}
	switch handler {
	case "postgresql":
		if pgURL == "" {
			return fmt.Errorf("-postgresql-url is required with -handler postgresql")
		}
		config.PostgreSQLURL = pgURL
	case "sqlite":
		if dataDir == "" {
			return fmt.Errorf("-data-dir is required with -handler sqlite")
		}
		abs, err := filepath.Abs(dataDir)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(abs, 0o700); err != nil {
			return err
		}
		config.SQLiteURL = "file:" + abs + "/"
	default:
		return fmt.Errorf("bad -handler %q: postgresql or sqlite", handler)
	}

	// The embedded package never starts telemetry; say so to anything else that looks.
	os.Setenv("DO_NOT_TRACK", "1")

	setVersion()

	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		return fmt.Errorf("bad -log-level %q: %w", logLevel, err)
	}
	config.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	db, err := ferretdb.New(&config)
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	done := make(chan error, 1)
	go func() { done <- db.Run(ctx) }()

	fmt.Printf("ready %s\n", db.MongoDBURI())
	os.Stdout.Sync()

	return <-done
}

// setVersion makes buildInfo's ferretdbVersion the version of the FerretDB module built in (go.mod pins
// it). Embedded, FerretDB reads its version only from files that its own release build writes, and
// reports "unknown" (in /healthz: engine_version).
func setVersion() {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return
	}
	for _, dep := range info.Deps {
		if dep.Path == ferretdbModule {
			version.Get().Version = dep.Version
		}
	}
}
