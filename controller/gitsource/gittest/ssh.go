package gittest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// SSHServer serves one repository read-only over SSH on 127.0.0.1: it
// authenticates clients by public key and runs git-upload-pack for them.
type SSHServer struct {
	URL        string // ssh://git@127.0.0.1:port/repo.git
	SCPURL     string // git@127.0.0.1:port:repo.git (go-git's scp-style with a port)
	HostKey    string // the server's public key, authorized_keys format (Options.HostKey)
	KnownHosts string // a known_hosts line for the server (write it to a file for Options.KnownHostsFile)
	ClientKey  []byte // PEM private key of a client the server accepts (Auth.SSHKey)

	repoDir string
	ln      net.Listener
	mu      sync.Mutex
	allowed [][]byte // marshaled client public keys
	conns   map[net.Conn]struct{}
	wg      sync.WaitGroup
}

// StartSSH serves repoDir until the test ends. It makes a host key and a
// client key (ClientKey); more client keys can be allowed with Allow.
func StartSSH(t testing.TB, repoDir string) *SSHServer {
	t.Helper()
	RequireGit(t)
	_, hostPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	hostSigner, err := ssh.NewSignerFromKey(hostPriv)
	if err != nil {
		t.Fatal(err)
	}
	clientPEM, clientPub := NewSSHKey(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().(*net.TCPAddr)
	s := &SSHServer{
		URL:        fmt.Sprintf("ssh://git@127.0.0.1:%d/repo.git", addr.Port),
		SCPURL:     fmt.Sprintf("git@127.0.0.1:%d:repo.git", addr.Port),
		HostKey:    strings.TrimSpace(string(ssh.MarshalAuthorizedKey(hostSigner.PublicKey()))),
		KnownHosts: knownhosts.Line([]string{knownhosts.Normalize(addr.String())}, hostSigner.PublicKey()),
		ClientKey:  clientPEM,
		repoDir:    repoDir,
		ln:         ln,
		conns:      map[net.Conn]struct{}{},
	}
	s.Allow(clientPub)
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			s.mu.Lock()
			defer s.mu.Unlock()
			for _, k := range s.allowed {
				if bytes.Equal(k, key.Marshal()) {
					return &ssh.Permissions{}, nil
				}
			}
			return nil, errors.New("key not allowed")
		},
	}
	cfg.AddHostKey(hostSigner)
	s.wg.Add(1)
	go s.serve(cfg)
	t.Cleanup(s.Close)
	return s
}

// NewSSHKey makes an Ed25519 key pair: the private key in OpenSSH PEM form,
// and the public key.
func NewSSHKey(t testing.TB) ([]byte, ssh.PublicKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(block), sshPub
}

// Allow lets clients holding the private half of key in.
func (s *SSHServer) Allow(key ssh.PublicKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.allowed = append(s.allowed, key.Marshal())
}

// Close stops listening, drops open connections and waits for them.
func (s *SSHServer) Close() {
	s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *SSHServer) serve(cfg *ssh.ServerConfig) {
	defer s.wg.Done()
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns[conn] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.conns, conn)
				s.mu.Unlock()
				conn.Close()
			}()
			s.handle(conn, cfg)
		}()
	}
}

func (s *SSHServer) handle(conn net.Conn, cfg *ssh.ServerConfig) {
	sconn, chans, reqs, err := ssh.NewServerConn(conn, cfg)
	if err != nil {
		return // bad key, bad handshake: the client sees why
	}
	defer sconn.Close()
	go ssh.DiscardRequests(reqs)
	for nc := range chans {
		if nc.ChannelType() != "session" {
			nc.Reject(ssh.UnknownChannelType, "only sessions")
			continue
		}
		ch, chReqs, err := nc.Accept()
		if err != nil {
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.session(ch, chReqs)
		}()
	}
}

// session answers "exec git-upload-pack '<path>'" and nothing else.
func (s *SSHServer) session(ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	for req := range reqs {
		if req.Type != "exec" {
			req.Reply(false, nil) // env, pty-req, shell, …
			continue
		}
		var payload struct{ Command string }
		if err := ssh.Unmarshal(req.Payload, &payload); err != nil {
			req.Reply(false, nil)
			return
		}
		req.Reply(true, nil)
		status := s.exec(ch, payload.Command)
		ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{status}))
		return
	}
}

func (s *SSHServer) exec(ch ssh.Channel, command string) uint32 {
	prog, arg, _ := strings.Cut(command, " ")
	arg = strings.Trim(arg, "'\"")
	if prog != "git-upload-pack" {
		fmt.Fprintf(ch.Stderr(), "gittest: only git-upload-pack is served, not %q\n", prog)
		return 1
	}
	if strings.TrimPrefix(arg, "/") != "repo.git" {
		fmt.Fprintf(ch.Stderr(), "fatal: '%s' does not appear to be a git repository\n", arg)
		return 128
	}
	cmd := exec.Command("git", "upload-pack", s.repoDir)
	cmd.Stdout = ch
	cmd.Stderr = ch.Stderr()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return 1
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(ch.Stderr(), "gittest: %v\n", err)
		return 1
	}
	go func() {
		io.Copy(stdin, ch)
		stdin.Close()
	}()
	if err := cmd.Wait(); err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return uint32(exit.ExitCode())
		}
		return 1
	}
	return 0
}
