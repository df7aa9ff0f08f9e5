package ipc

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// TestRoomLayoutGolden pins a Broadcast payload: room length (u16 LE),
// room, message.
func TestRoomLayoutGolden(t *testing.T) {
	got := append(AppendRoom(nil, "lobby"), "hi"...)
	if want := []byte("\x05\x00lobbyhi"); !bytes.Equal(got, want) {
		t.Fatalf("AppendRoom: got %q, want %q", got, want)
	}
	room, msg, ok := SplitRoom(got)
	if !ok || room != "lobby" || string(msg) != "hi" {
		t.Fatalf("SplitRoom: %q %q %v", room, msg, ok)
	}
	for _, bad := range [][]byte{nil, {5}, []byte("\x05\x00lob")} {
		if _, _, ok := SplitRoom(bad); ok {
			t.Errorf("SplitRoom(%q): ok, want a refusal", bad)
		}
	}
	for _, slot := range []int{0, 1, 255, 65534} {
		if got := TaskFrom(TaskOrigin(slot)); got != slot {
			t.Errorf("TaskFrom(TaskOrigin(%d)) = %d", slot, got)
		}
	}
	if TaskFrom(0) != -1 {
		t.Errorf("TaskFrom(0) = %d, want -1 (no origin)", TaskFrom(0))
	}
}

// TestWorkerConfigWire pins the start-up configuration's environment
// variable, the modes and the JSON names a worker of another build reads.
func TestWorkerConfigWire(t *testing.T) {
	if EnvWorkerConfig != "FORKD_WORKER_CONFIG" || ModeProcess != "process" || ModeBase != "base" {
		t.Fatalf("names: %q %q %q", EnvWorkerConfig, ModeProcess, ModeBase)
	}
	c := WorkerConfig{Mode: ModeBase, Slot: 2, Listeners: []WorkerListener{{Name: "ws", Addr: "127.0.0.1:1", Protocol: "websocket", TLS: true}}, PerIPFD: -1}
	env := c.Encode()
	v, ok := strings.CutPrefix(env, EnvWorkerConfig+"=")
	if !ok {
		t.Fatalf("Encode: %q", env)
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal([]byte(v), &keys); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"mode", "slot", "task", "workers", "task_workers", "listeners", "max_package_size",
		"max_send_buffer", "max_conns", "max_request", "heartbeat_idle", "read_timeout", "idle_timeout",
		"reload_wait", "call_timeout", "log_format", "log_level", "per_ip_fd", "per_ip_row", "id_node", "id_start"} {
		if _, ok := keys[k]; !ok {
			t.Errorf("key %q missing from %s", k, v)
		}
	}
	if !strings.Contains(v, `"listeners":[{"name":"ws","addr":"127.0.0.1:1","protocol":"websocket","upgrade":false,"tls":true}]`) {
		t.Errorf("listener layout changed: %s", v)
	}
	t.Setenv(EnvWorkerConfig, v)
	back, ok, err := WorkerConfigFromEnv()
	if err != nil || !ok || back.Slot != 2 || back.Mode != ModeBase || len(back.Listeners) != 1 {
		t.Fatalf("WorkerConfigFromEnv: %+v %v %v", back, ok, err)
	}
}
