// An independent Varlink client against sessiond: the reference Go
// implementation of Varlink (github.com/varlink/go, Debian's
// golang-github-varlink-go-dev), as a web application written in Go would
// use it.
//
// Why. sessiond's own clients (sessionctl, the Python and C libraries) share
// its assumptions; a client written by other people does not. This one sends
// "parameters": null for calls without parameters, omits false flags and
// reads replies its own way. Everything goes through the library's own
// helpers: GetInfo and GetInterfaceDescription, Call for one reply, and Send
// with the More flag for Watch, whose receive function reports Continues.
// The library's IDL parser (2021) takes only lower-case interface names, so
// the description is compared as text, not parsed.
//
// Usage: varlink-go SOCKET MODE [INTERFACE_FILE]
//
//	MODE enabled:  every io.sessiond.Session method and its errors; the
//	               daemon runs with security.max_concurrent_per_user = 2,
//	               security.max_platform_switches_per_hour = 2 and
//	               sync.max_data_size = 64 (tests/integration/test_interop.py);
//	               INTERFACE_FILE is io.sessiond.Session.varlink, which
//	               GetInterfaceDescription must return verbatim.
//	MODE disabled: the FeatureDisabled errors, with features.cross_tab_sync
//	               and features.platform_switching off.
//
// Prints one "ok" line per check and exits 0, or prints what differed and
// exits 1.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/varlink/go/varlink"
)

const session = "io.sessiond.Session."

type client struct {
	UserAgent      string `json:"user_agent,omitempty"`
	IP             string `json:"ip,omitempty"`
	AcceptLanguage string `json:"accept_language,omitempty"`
	AcceptEncoding string `json:"accept_encoding,omitempty"`
}

type sessionInfo struct {
	ID           string  `json:"id"`
	UserID       string  `json:"user_id"`
	PlatformID   *string `json:"platform_id"`
	CreatedAt    int64   `json:"created_at"`
	LastActivity int64   `json:"last_activity"`
	ExpiresAt    int64   `json:"expires_at"`
	State        string  `json:"state"`
	IP           *string `json:"ip"`
	UserAgent    *string `json:"user_agent"`
	EndedAt      *int64  `json:"ended_at"`
	EndReason    *string `json:"end_reason"`
}

type createReply struct {
	Token   string      `json:"token"`
	Session sessionInfo `json:"session"`
	Evicted []string    `json:"evicted"`
}

type validateReply struct {
	Session   sessionInfo `json:"session"`
	State     string      `json:"state"`
	ExpiresIn int64       `json:"expires_in"`
	Warning   bool        `json:"warning"`
}

type syncReply struct {
	Version int64   `json:"version"`
	Data    *string `json:"data"`
}

type watchReply struct {
	Event   string      `json:"event"`
	Session sessionInfo `json:"session"`
	Version *int64      `json:"version"`
	Data    *string     `json:"data"`
}

type tokenParams struct {
	Token string `json:"token"`
}

var ctx context.Context

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "FAIL: "+format+"\n", args...)
	os.Exit(1)
}

func ok(format string, args ...interface{}) {
	fmt.Printf("ok   "+format+"\n", args...)
}

func check(cond bool, format string, args ...interface{}) {
	if !cond {
		fail(format, args...)
	}
}

func connect(path string) *varlink.Connection {
	c, err := varlink.NewConnection(ctx, "unix:"+path)
	if err != nil {
		fail("connect %s: %v", path, err)
	}
	return c
}

// call makes a call that must succeed.
func call(c *varlink.Connection, method string, in interface{}, out interface{}) {
	if err := c.Call(ctx, session+method, in, out); err != nil {
		fail("%s: %v %s", method, err, errorParameters(err))
	}
}

func errorParameters(err error) string {
	var e *varlink.Error
	if errors.As(err, &e) {
		if raw, _ := e.Parameters.(*json.RawMessage); raw != nil {
			return string(*raw)
		}
	}
	return ""
}

// callError makes a call that must fail with io.sessiond.Session.<name>;
// the error's parameters are decoded into params (when not nil).
func callError(c *varlink.Connection, method string, in interface{}, name string, params interface{}) {
	err := c.Call(ctx, session+method, in, &struct{}{})
	var e *varlink.Error
	if !errors.As(err, &e) {
		fail("%s: %v, expected the error %s", method, err, name)
	}
	if e.Name != session+name {
		fail("%s: error %s %s, expected %s", method, e.Name, errorParameters(err), session+name)
	}
	if params != nil {
		raw, _ := e.Parameters.(*json.RawMessage)
		if raw == nil {
			fail("%s: %s without parameters", method, e.Name)
		}
		if err := json.Unmarshal(*raw, params); err != nil {
			fail("%s: %s parameters %s: %v", method, e.Name, *raw, err)
		}
	}
	ok("%s -> %s %s", method, name, errorParameters(err))
}

type expiredError struct {
	Reason string `json:"reason"`
}

type invalidArgument struct {
	Field  string `json:"field"`
	Reason string `json:"reason"`
}

func expectExpired(c *varlink.Connection, method string, in interface{}, reason string) {
	var p expiredError
	callError(c, method, in, "Expired", &p)
	check(p.Reason == reason, "%s: Expired(%q), expected %q", method, p.Reason, reason)
}

func expectInvalidArgument(c *varlink.Connection, method string, in interface{}, field string) {
	var p invalidArgument
	callError(c, method, in, "InvalidArgument", &p)
	check(p.Field == field && p.Reason != "", "%s: InvalidArgument(%q, %q), expected field %q",
		method, p.Field, p.Reason, field)
}

func serviceCalls(c *varlink.Connection, interfaceFile string) {
	var vendor, product, version, url string
	var interfaces []string

	if err := c.GetInfo(ctx, &vendor, &product, &version, &url, &interfaces); err != nil {
		fail("GetInfo: %v", err)
	}
	check(vendor == "sessiond" && product == "sessiond" && version != "" && url != "",
		"GetInfo: %q %q %q %q", vendor, product, version, url)
	check(strings.Join(interfaces, " ") == "org.varlink.service io.sessiond.Session io.sessiond.Admin",
		"GetInfo: interfaces %v", interfaces)
	ok("GetInfo: %s %s %s %v", vendor, product, version, interfaces)

	want, err := os.ReadFile(interfaceFile)
	if err != nil {
		fail("%v", err)
	}
	description, err := c.GetInterfaceDescription(ctx, "io.sessiond.Session")
	if err != nil {
		fail("GetInterfaceDescription: %v", err)
	}
	check(description == string(want), "GetInterfaceDescription: not the text of %s:\n%s", interfaceFile, description)
	ok("GetInterfaceDescription io.sessiond.Session: %d bytes, verbatim", len(description))

	_, err = c.GetInterfaceDescription(ctx, "com.example.Nope")
	var notFound *varlink.InterfaceNotFound
	check(errors.As(err, &notFound) && notFound.Interface == "com.example.Nope",
		"GetInterfaceDescription com.example.Nope: %v", err)
	ok("GetInterfaceDescription com.example.Nope -> InterfaceNotFound(%s)", notFound.Interface)

	// Call(nil) sends "parameters": null.
	err = c.Call(ctx, session+"NoSuch", nil, &struct{}{})
	var noMethod *varlink.MethodNotFound
	check(errors.As(err, &noMethod) && noMethod.Method == session+"NoSuch", "NoSuch: %v", err)
	ok("NoSuch -> MethodNotFound(%s)", noMethod.Method)

	err = c.Call(ctx, session+"Validate", nil, &struct{}{})
	var invalid *varlink.InvalidParameter
	check(errors.As(err, &invalid) && invalid.Parameter == "token", "Validate without a token: %v", err)
	ok("Validate(null) -> InvalidParameter(%s)", invalid.Parameter)

	err = c.Call(ctx, session+"Create", map[string]interface{}{"user_id": 5}, &struct{}{})
	check(errors.As(err, &invalid) && invalid.Parameter == "user_id", "Create(user_id: 5): %v", err)
	ok("Create(user_id: 5) -> InvalidParameter(%s)", invalid.Parameter)
}

func create(c *varlink.Connection, in map[string]interface{}) createReply {
	var r createReply
	call(c, "Create", in, &r)
	check(len(r.Token) == 43 && r.Session.ID != "" && r.Session.State == "active", "Create: %+v", r)
	return r
}

func sessionMethods(c *varlink.Connection, socketPath string) {
	web := client{UserAgent: "Go-http-client/1.1", IP: "192.0.2.7", AcceptLanguage: "en", AcceptEncoding: "gzip"}
	unknown := strings.Repeat("A", 43)

	// Create and its errors.
	first := create(c, map[string]interface{}{"user_id": "gopher", "platform_id": "web", "client": web,
		"sync_data": "v1"})
	check(first.Session.UserID == "gopher" && *first.Session.PlatformID == "web" &&
		*first.Session.IP == web.IP && *first.Session.UserAgent == web.UserAgent && len(first.Evicted) == 0,
		"Create: %+v", first)
	ok("Create -> token, session %s", first.Session.ID)
	expectInvalidArgument(c, "Create", map[string]interface{}{"user_id": ""}, "user_id")
	var tooLarge struct {
		Max int64 `json:"max"`
	}
	callError(c, "Create", map[string]interface{}{"user_id": "gopher", "sync_data": strings.Repeat("x", 65)},
		"TooLarge", &tooLarge)
	check(tooLarge.Max == 64, "Create: TooLarge(%d)", tooLarge.Max)

	// Validate and its errors.
	var v validateReply
	call(c, "Validate", map[string]interface{}{"token": first.Token, "client": web}, &v)
	check(v.State == "active" && v.ExpiresIn > 0 && !v.Warning && v.Session.ID == first.Session.ID,
		"Validate: %+v", v)
	ok("Validate -> %s, expires in %d s", v.State, v.ExpiresIn)
	call(c, "Validate", map[string]interface{}{"token": first.Token, "touch": false}, &v)
	check(v.State == "active", "Validate(touch: false): %+v", v)
	other := web
	other.UserAgent = "curl/7.88"
	callError(c, "Validate", map[string]interface{}{"token": first.Token, "client": other},
		"FingerprintMismatch", nil)
	callError(c, "Validate", tokenParams{unknown}, "NotFound", nil)
	expectInvalidArgument(c, "Validate", tokenParams{"not-a-token"}, "token")

	// Heartbeat, Extend.
	var hb struct {
		ExpiresIn int64 `json:"expires_in"`
		Warning   bool  `json:"warning"`
	}
	call(c, "Heartbeat", tokenParams{first.Token}, &hb)
	check(hb.ExpiresIn > 0 && !hb.Warning, "Heartbeat: %+v", hb)
	ok("Heartbeat -> expires in %d s", hb.ExpiresIn)
	callError(c, "Heartbeat", tokenParams{unknown}, "NotFound", nil)
	var ext struct {
		Session   sessionInfo `json:"session"`
		ExpiresIn int64       `json:"expires_in"`
	}
	call(c, "Extend", tokenParams{first.Token}, &ext)
	check(ext.ExpiresIn > 0 && ext.Session.ID == first.Session.ID, "Extend: %+v", ext)
	ok("Extend -> expires in %d s", ext.ExpiresIn)
	callError(c, "Extend", tokenParams{unknown}, "NotFound", nil)

	// Sync state: versions, compare-and-set, size.
	var st syncReply
	call(c, "GetSyncState", tokenParams{first.Token}, &st)
	check(st.Version == 1 && st.Data != nil && *st.Data == "v1", "GetSyncState: %+v", st)
	ok("GetSyncState -> version %d", st.Version)
	call(c, "SetSyncState", map[string]interface{}{"token": first.Token, "data": "v2", "expected_version": 1}, &st)
	check(st.Version == 2, "SetSyncState: %+v", st)
	ok("SetSyncState -> version %d", st.Version)
	var conflict struct {
		Version int64 `json:"version"`
	}
	callError(c, "SetSyncState", map[string]interface{}{"token": first.Token, "data": "late", "expected_version": 1},
		"Conflict", &conflict)
	check(conflict.Version == 2, "SetSyncState: Conflict(%d)", conflict.Version)
	callError(c, "SetSyncState", map[string]interface{}{"token": first.Token, "data": strings.Repeat("x", 65)},
		"TooLarge", &tooLarge)
	check(tooLarge.Max == 64, "SetSyncState: TooLarge(%d)", tooLarge.Max)
	callError(c, "GetSyncState", tokenParams{unknown}, "NotFound", nil)

	// SwitchPlatform: two switches an hour, then RateLimited.
	var sw struct {
		Session sessionInfo `json:"session"`
	}
	call(c, "SwitchPlatform", map[string]interface{}{"token": first.Token, "platform_id": "ios"}, &sw)
	check(*sw.Session.PlatformID == "ios", "SwitchPlatform: %+v", sw)
	ok("SwitchPlatform -> %s", *sw.Session.PlatformID)
	call(c, "SwitchPlatform", map[string]interface{}{"token": first.Token, "platform_id": "android"}, &sw)
	var limited struct {
		RetryAfter int64 `json:"retry_after"`
	}
	callError(c, "SwitchPlatform", map[string]interface{}{"token": first.Token, "platform_id": "web"},
		"RateLimited", &limited)
	check(limited.RetryAfter > 0 && limited.RetryAfter <= 3600, "RateLimited(%d)", limited.RetryAfter)
	expectInvalidArgument(c, "SwitchPlatform", map[string]interface{}{"token": first.Token, "platform_id": ""},
		"platform_id")

	// ListUser, and eviction beyond max_concurrent_per_user = 2.
	second := create(c, map[string]interface{}{"user_id": "gopher"})
	var list struct {
		Sessions []sessionInfo `json:"sessions"`
	}
	call(c, "ListUser", map[string]interface{}{"user_id": "gopher"}, &list)
	check(len(list.Sessions) == 2, "ListUser: %+v", list)
	ok("ListUser -> %d sessions", len(list.Sessions))
	expectInvalidArgument(c, "ListUser", map[string]interface{}{"user_id": ""}, "user_id")
	third := create(c, map[string]interface{}{"user_id": "gopher"})
	check(len(third.Evicted) == 1, "Create beyond the limit: evicted %v", third.Evicted)
	evicted := first.Token
	if third.Evicted[0] == second.Session.ID {
		evicted = second.Token
	} else {
		check(third.Evicted[0] == first.Session.ID, "evicted %v, not one of the user's sessions", third.Evicted)
	}
	ok("Create -> evicted %s", third.Evicted[0])
	expectExpired(c, "Validate", tokenParams{evicted}, "evicted")
	kept := first
	if evicted == first.Token {
		kept = second
	}

	// Watch through Send with More: a state snapshot, then events, each
	// marked Continues, until the session ends.
	watchStream(c, socketPath, kept.Token)

	// Rotate: a new token, the old one Expired(rotated).
	var rot struct {
		Token   string      `json:"token"`
		Session sessionInfo `json:"session"`
	}
	call(c, "Rotate", tokenParams{third.Token}, &rot)
	check(len(rot.Token) == 43 && rot.Token != third.Token && rot.Session.ID != third.Session.ID, "Rotate: %+v", rot)
	ok("Rotate -> a new token and session %s", rot.Session.ID)
	expectExpired(c, "Validate", tokenParams{third.Token}, "rotated")
	expectExpired(c, "Rotate", tokenParams{third.Token}, "rotated")
	callError(c, "Rotate", tokenParams{unknown}, "NotFound", nil)

	// DestroyUser, except one token.
	fourth := create(c, map[string]interface{}{"user_id": "gopher"})
	var count struct {
		Count int64 `json:"count"`
	}
	call(c, "DestroyUser", map[string]interface{}{"user_id": "gopher", "except_token": fourth.Token}, &count)
	check(count.Count == 1, "DestroyUser: %+v", count)
	ok("DestroyUser -> %d", count.Count)
	expectExpired(c, "Validate", tokenParams{rot.Token}, "destroyed")
	other2 := create(c, map[string]interface{}{"user_id": "other"})
	expectInvalidArgument(c, "DestroyUser", map[string]interface{}{"user_id": "gopher", "except_token": other2.Token},
		"except_token")

	// Destroy.
	call(c, "Destroy", tokenParams{fourth.Token}, &struct{}{})
	ok("Destroy -> ()")
	expectExpired(c, "Destroy", tokenParams{fourth.Token}, "destroyed")
	callError(c, "Destroy", tokenParams{unknown}, "NotFound", nil)

	// GetClientConfig: called with "parameters": null.
	var cfg struct {
		Config map[string]interface{} `json:"config"`
	}
	call(c, "GetClientConfig", nil, &cfg)
	check(len(cfg.Config) > 0, "GetClientConfig: %+v", cfg)
	ok("GetClientConfig -> %d keys", len(cfg.Config))
}

func watchStream(c *varlink.Connection, socketPath, token string) {
	w := connect(socketPath)
	defer w.Close()

	// Without More the daemon refuses a stream.
	err := w.Call(ctx, session+"Watch", tokenParams{token}, &struct{}{})
	var e *varlink.Error
	check(errors.As(err, &e) && e.Name == "org.varlink.service.ExpectedMore", "Watch without more: %v", err)
	ok("Watch without more -> %s", e.Name)

	receive, err := w.Send(ctx, session+"Watch", tokenParams{token}, varlink.More)
	if err != nil {
		fail("Watch: %v", err)
	}
	next := func(event string) (watchReply, uint64) {
		var r watchReply
		flags, err := receive(ctx, &r)
		if err != nil {
			fail("Watch, waiting for %s: %v %s", event, err, errorParameters(err))
		}
		check(r.Event == event, "Watch: event %q, expected %q", r.Event, event)
		return r, flags
	}
	r, flags := next("state")
	check(flags&varlink.Continues != 0 && r.Version != nil, "Watch state: flags %d, %+v", flags, r)
	ok("Watch -> state (version %d), continues", *r.Version)

	var st syncReply
	call(c, "SetSyncState", map[string]interface{}{"token": token, "data": "from another tab"}, &st)
	r, flags = next("sync")
	check(flags&varlink.Continues != 0 && r.Data != nil && *r.Data == "from another tab" && *r.Version == st.Version,
		"Watch sync: flags %d, %+v", flags, r)
	ok("Watch -> sync (version %d), continues", *r.Version)

	call(c, "Destroy", tokenParams{token}, &struct{}{})
	r, flags = next("ended")
	check(flags&varlink.Continues == 0 && r.Session.State == "ended" && r.Session.EndReason != nil &&
		*r.Session.EndReason == "destroyed", "Watch ended: flags %d, %+v", flags, r)
	ok("Watch -> ended (%s), the last reply", *r.Session.EndReason)

	// The connection takes calls again; a stream of an ended session is an error.
	var cfg struct {
		Config map[string]interface{} `json:"config"`
	}
	call(w, "GetClientConfig", nil, &cfg)
	receive, err = w.Send(ctx, session+"Watch", tokenParams{token}, varlink.More)
	if err != nil {
		fail("Watch: %v", err)
	}
	_, err = receive(ctx, &struct{}{})
	check(errors.As(err, &e) && e.Name == session+"Expired", "Watch of an ended session: %v", err)
	ok("Watch of an ended session -> %s %s", e.Name, errorParameters(err))
	receive, _ = w.Send(ctx, session+"Watch", tokenParams{strings.Repeat("A", 43)}, varlink.More)
	_, err = receive(ctx, &struct{}{})
	check(errors.As(err, &e) && e.Name == session+"NotFound", "Watch of an unknown token: %v", err)
	ok("Watch of an unknown token -> %s", e.Name)
}

func disabledFeatures(c *varlink.Connection) {
	type feature struct {
		Feature string `json:"feature"`
	}
	s := create(c, map[string]interface{}{"user_id": "gopher"})
	for _, t := range []struct {
		method  string
		params  map[string]interface{}
		feature string
	}{
		{"GetSyncState", map[string]interface{}{"token": s.Token}, "cross_tab_sync"},
		{"SetSyncState", map[string]interface{}{"token": s.Token, "data": "x"}, "cross_tab_sync"},
		{"Create", map[string]interface{}{"user_id": "gopher", "sync_data": "x"}, "cross_tab_sync"},
		{"SwitchPlatform", map[string]interface{}{"token": s.Token, "platform_id": "ios"}, "platform_switching"},
	} {
		var p feature
		callError(c, t.method, t.params, "FeatureDisabled", &p)
		check(p.Feature == t.feature, "%s: FeatureDisabled(%q), expected %q", t.method, p.Feature, t.feature)
	}
}

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: varlink-go SOCKET enabled INTERFACE_FILE | SOCKET disabled")
		os.Exit(2)
	}
	var cancel context.CancelFunc
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	c := connect(os.Args[1])
	defer c.Close()
	switch os.Args[2] {
	case "enabled":
		if len(os.Args) < 4 {
			fail("enabled needs the interface file")
		}
		serviceCalls(c, os.Args[3])
		sessionMethods(c, os.Args[1])
	case "disabled":
		disabledFeatures(c)
	default:
		fail("unknown mode %q", os.Args[2])
	}
}
