package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"podnet/lab"
	"podnet/lab/labtest"
)

func TestSplitExecArgs(t *testing.T) {
	tests := []struct {
		args       []string
		wantTarget string
		wantCmd    string
		wantName   string
		wantErr    string
	}{
		{[]string{"test-1", "--", "ping", "-c3", "x"}, "test-1", "ping -c3 x", "podnet", ""},
		{[]string{"test-1", "ping", "-c3", "x"}, "test-1", "ping -c3 x", "podnet", ""},
		{[]string{"test-1", "--name", "tour", "--", "ping", "--name", "x"}, "test-1", "ping --name x", "tour", ""},
		{[]string{"test-1", "--name=tour", "--", "true"}, "test-1", "true", "tour", ""},
		{[]string{"test-1", "--name", "tour", "true"}, "test-1", "true", "tour", ""},
		{[]string{"test-1", "--"}, "", "", "podnet", "no command"},
		{[]string{"test-1", "--name", "tour"}, "", "", "tour", "no command"},
	}
	for _, tt := range tests {
		name := "podnet"
		target, argv, err := splitExecArgs(tt.args, &name)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("splitExecArgs(%q): got err %v, want %q", tt.args, err, tt.wantErr)
			}
			continue
		}
		if err != nil || target != tt.wantTarget || strings.Join(argv, " ") != tt.wantCmd || name != tt.wantName {
			t.Errorf("splitExecArgs(%q): got %q %q name %q err %v; want %q %q name %q",
				tt.args, target, argv, name, err, tt.wantTarget, tt.wantCmd, tt.wantName)
		}
	}
}

// TestLabCLI runs the lab commands as a user types them, against a real
// lab whose name is not the default: --name anywhere, lab list, lab env
// used from the host, pods added and scaled, the graph, and the errors
// for a lab that is not up and for nginx that is not installed.
func TestLabCLI(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.Up(t, lab.Config{Nodes: 2, Pods: 1, HTTPServer: lab.HTTPBuiltin})
	name := l.Name()
	bin := labtest.Binary(t)
	// Nothing of the machine's shell may aim the commands elsewhere.
	cfg := filepath.Join(t.TempDir(), "podnet.cfg")
	if err := os.WriteFile(cfg, []byte("datastore: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The shell below says `podnet`: give it that name whatever the test
	// binary is called (podnet-race under -race).
	pathDir := t.TempDir()
	if err := os.Symlink(bin, filepath.Join(pathDir, "podnet")); err != nil {
		t.Fatal(err)
	}
	base := []string{"PATH=" + pathDir + ":" + os.Getenv("PATH"), "PODNET_CONFIG=" + cfg}
	run := func(env []string, args ...string) (string, error) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = append(append([]string{}, base...), env...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	mustRun := func(args ...string) string {
		t.Helper()
		out, err := run(nil, args...)
		if err != nil {
			t.Fatalf("podnet %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}

	missing := name + "no"
	out, err := run(nil, "lab", "status", "--name", missing)
	if err == nil || !strings.Contains(out, "lab "+missing+" is not up; labs up: ") || !strings.Contains(out, name) {
		t.Errorf("lab status of a lab that is not up: got %q, want it to name lab %s among the labs up", out, name)
	}
	if out := mustRun("lab", "list"); !strings.Contains(out, name+" ") {
		t.Errorf("lab list: got %q, want %s in it", out, name)
	}

	// --name after TARGET is ours, not the command's.
	ip1 := l.PodIP("test-1").String()
	if out := mustRun("lab", "exec", "test-1", "--name", name, "--", "ip", "-4", "-o", "addr", "show", "dev", "eth0"); !strings.Contains(out, ip1+"/32") {
		t.Errorf("lab exec test-1 --name %s: got %q, want test-1's address %s", name, out, ip1)
	}

	env := mustRun("lab", "env", "--name", name)
	for _, want := range []string{"export PODNET_LAB=" + name + "\n", "export PODNET_DATASTORE_ENDPOINTS=" + l.Datastore() + "\n", "export PODNET_SOCKET="} {
		if !strings.Contains(env, want) {
			t.Errorf("lab env: got %q, want a line %q", env, want)
		}
	}
	// From the host, after eval: resource, IPAM and node commands, and
	// lab commands with no --name.
	sh := exec.Command("sh", "-c", `eval "$(podnet lab env --name `+name+`)" && podnet get ippool && podnet ipam show && podnet node status && podnet lab status`)
	sh.Env = base
	if out, err := sh.CombinedOutput(); err != nil || !strings.Contains(string(out), "default-ipv4-ippool") ||
		!strings.Contains(string(out), "Established") || !strings.Contains(string(out), "lab "+name+" (run dir") {
		t.Errorf("commands after eval \"$(podnet lab env)\": %v\n%s", err, out)
	}

	// --name before the subcommand, after it, and from $PODNET_LAB.
	if out := mustRun("lab", "--name", name, "pod", "add", "web", "--node", "worker1"); !strings.Contains(out, "pod web added on worker1: ") {
		t.Errorf("lab pod add web: got %q", out)
	}
	out, err = run([]string{"PODNET_LAB=" + name}, "lab", "scale", "test=2")
	if err != nil || !strings.Contains(out, "pod test-2 added on worker2: ") || !strings.Contains(out, "deployment test: 2 pods") {
		t.Errorf("lab scale test=2 with PODNET_LAB: got %q, %v", out, err)
	}
	ip2 := l.PodIP("test-2")
	if !ip2.IsValid() {
		// l was opened before the scale: reopen to see it.
		l2, err := lab.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		ip2 = l2.PodIP("test-2")
	}
	if out := mustRun("lab", "exec", "--name", name, "web", "--", "podnet", "lab", "serve-http", "--help"); out == "" {
		t.Errorf("lab exec in web: no output")
	}
	if out := mustRun("lab", "status", "--name", name); !strings.Contains(out, "pod web ") || !strings.Contains(out, "pod test-2 "+ip2.String()) {
		t.Errorf("lab status: got %q, want the diagram with web and test-2", out)
	}
	if out := mustRun("lab", "graph", "--name", name, "--format", "dot"); !strings.HasPrefix(out, `digraph "lab `+name+`" {`) {
		t.Errorf("lab graph --format dot: got %q", out)
	}
	svg := filepath.Join(t.TempDir(), "lab.svg")
	mustRun("lab", "graph", "--name", name, "-o", svg)
	if b, err := os.ReadFile(svg); err != nil || !strings.HasPrefix(string(b), "<svg ") || !strings.Contains(string(b), "pod web ") {
		t.Errorf("lab graph -o lab.svg: got %.80q, %v", b, err)
	}
	if out, err := run(nil, "lab", "graph", "--name", name, "--format", "png"); err == nil || !strings.Contains(out, `--format "png"`) {
		t.Errorf("lab graph --format png: got %q, %v", out, err)
	}
	if out := mustRun("lab", "pod", "del", "web", "--name", name); out != "pod web deleted\n" {
		t.Errorf("lab pod del web: got %q", out)
	}

	// nginx asked for and not installed: refused before anything is built.
	other := labtest.Name()
	cmd := exec.Command(bin, "lab", "up", "--name", other, "--http-server", "nginx")
	cmd.Env = []string{"PATH=/nonexistent"}
	out2, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out2), "apt-get install nginx-light") {
		t.Errorf("lab up --http-server nginx without nginx: got %q, %v", out2, err)
	}
	if _, err := os.Stat(lab.DefaultRunDir(other)); !os.IsNotExist(err) {
		lab.Down(other)
		t.Errorf("lab up --http-server nginx without nginx made %s: %v", lab.DefaultRunDir(other), err)
	}
}
