// Command packaging builds the Debian package of gitfleet-agent with nFPM
// (github.com/goreleaser/nfpm): scripts/dist runs it once per architecture
// with the agent binary it built.
//
//	go run ./scripts/packaging -arch arm64 -binary dist/linux-arm64/gitfleet-agent -version "$(git describe --tags --always --dirty)" -out dist
//
// The package holds:
//
//	/usr/bin/gitfleet-agent
//	/lib/systemd/system/gitfleet-agent.service
//	/etc/gitfleet/agent.json                        conffile: the defaults, written out
//	/usr/share/gitfleet/identity/gitfleet-device-identity
//	/usr/share/gitfleet/inventory/mender-inventory-os
//	/usr/lib/gitfleet/apply-device-config.d/        device configuration scripts
//	/var/lib/gitfleet/                              the agent's data (0700)
//	/usr/share/doc/gitfleet-agent/{README.md,copyright}
//
// It has no maintainer scripts: the service is enabled by the operator once
// the configuration names the server (systemctl enable --now gitfleet-agent).
package main

import (
	"embed"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/deb"
	"github.com/goreleaser/nfpm/v2/files"
)

//go:embed gitfleet-agent.service agent.json gitfleet-device-identity mender-inventory-os
var packaged embed.FS

// Options say what to package.
type Options struct {
	// Arch is the Go architecture (amd64, arm64, arm); GOARM says which
	// arm (7: armhf).
	Arch, GOARM string
	// Binary is the gitfleet-agent built for Arch.
	Binary string
	// Version is what `git describe --tags --always --dirty` printed; it
	// becomes a Debian version (see DebianVersion).
	Version string
	// Readme and License become /usr/share/doc/gitfleet-agent/README.md
	// and copyright.
	Readme, License string
	// Out is the directory the .deb is written to.
	Out string
}

func main() {
	var o Options
	flag.StringVar(&o.Arch, "arch", "", "Go architecture of the binary: amd64, arm64 or arm")
	flag.StringVar(&o.GOARM, "goarm", "7", "with -arch arm: the GOARM the binary was built with (5, 6 or 7)")
	flag.StringVar(&o.Binary, "binary", "", "the gitfleet-agent binary built for -arch")
	flag.StringVar(&o.Version, "version", "", "version, as `git describe --tags --always --dirty` prints it (default 0.0.0+dev)")
	flag.StringVar(&o.Readme, "readme", "docs/agent.md", "file installed as /usr/share/doc/gitfleet-agent/README.md")
	flag.StringVar(&o.License, "license", "LICENSE", "file installed as /usr/share/doc/gitfleet-agent/copyright")
	flag.StringVar(&o.Out, "out", "dist", "directory to write the .deb to")
	flag.Usage = func() {
		fmt.Fprintln(flag.CommandLine.Output(), "usage: go run ./scripts/packaging -arch ARCH -binary FILE [-version V] [-out DIR]")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "packaging: unexpected arguments %q\n", flag.Args())
		flag.Usage()
		os.Exit(2)
	}
	path, err := BuildDeb(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "packaging:", err)
		os.Exit(1)
	}
	fmt.Println(path)
}

// BuildDeb writes the package and returns its path.
func BuildDeb(o Options) (string, error) {
	arch, err := debianArch(o.Arch, o.GOARM)
	if err != nil {
		return "", err
	}
	for _, f := range []struct{ flag, path string }{{"-binary", o.Binary}, {"-readme", o.Readme}, {"-license", o.License}} {
		if f.path == "" {
			return "", fmt.Errorf("%s is required", f.flag)
		}
		if st, err := os.Stat(f.path); err != nil {
			return "", fmt.Errorf("%s: %w", f.flag, err)
		} else if !st.Mode().IsRegular() {
			return "", fmt.Errorf("%s %s is not a regular file", f.flag, f.path)
		}
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return "", err
	}
	// nFPM reads contents from files: the embedded ones go to a temp dir.
	tmp, err := os.MkdirTemp("", "gitfleet-packaging-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	if err := os.CopyFS(tmp, packaged); err != nil {
		return "", err
	}
	src := func(name string) string { return filepath.Join(tmp, name) }

	file := func(source, dst string, mode fs.FileMode) *files.Content {
		return &files.Content{Source: source, Destination: dst, FileInfo: &files.ContentFileInfo{Mode: mode, Owner: "root", Group: "root"}}
	}
	dir := func(dst string, mode fs.FileMode) *files.Content {
		return &files.Content{Destination: dst, Type: files.TypeDir, FileInfo: &files.ContentFileInfo{Mode: mode, Owner: "root", Group: "root"}}
	}
	conf := file(src("agent.json"), "/etc/gitfleet/agent.json", 0o600)
	conf.Type = files.TypeConfig
	info := &nfpm.Info{
		Name:          "gitfleet-agent",
		Arch:          arch,
		Platform:      "linux",
		Version:       DebianVersion(o.Version),
		VersionSchema: "none",
		Section:       "admin",
		Priority:      "optional",
		Maintainer:    "Gitfleet maintainers <gitfleet@localhost>",
		Description: "Gitfleet device agent: signed, atomic over-the-air updates driven by Git\n" +
			"Polls a Gitfleet controller (or a Mender server) for deployments, installs\n" +
			"artifacts to the inactive root filesystem or through update modules, reboots,\n" +
			"commits or rolls back; runs monitoring checks and applies device configuration.",
		License: "see /usr/share/doc/gitfleet-agent/copyright",
		Overridables: nfpm.Overridables{
			Suggests: []string{"u-boot-tools | grub-common"},
			Contents: files.Contents{
				file(o.Binary, "/usr/bin/gitfleet-agent", 0o755),
				file(src("gitfleet-agent.service"), "/lib/systemd/system/gitfleet-agent.service", 0o644),
				dir("/etc/gitfleet", 0o755),
				conf,
				dir("/usr/share/gitfleet/identity", 0o755),
				file(src("gitfleet-device-identity"), "/usr/share/gitfleet/identity/gitfleet-device-identity", 0o755),
				dir("/usr/share/gitfleet/inventory", 0o755),
				file(src("mender-inventory-os"), "/usr/share/gitfleet/inventory/mender-inventory-os", 0o755),
				dir("/usr/lib/gitfleet/apply-device-config.d", 0o755),
				dir("/var/lib/gitfleet", 0o700),
				file(o.Readme, "/usr/share/doc/gitfleet-agent/README.md", 0o644),
				file(o.License, "/usr/share/doc/gitfleet-agent/copyright", 0o644),
			},
		},
	}
	info = nfpm.WithDefaults(info)
	if err := info.Validate(); err != nil {
		return "", fmt.Errorf("package description: %w", err)
	}
	out := filepath.Join(o.Out, deb.Default.ConventionalFileName(info))
	f, err := os.Create(out + ".tmp")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	if err := deb.Default.Package(info, f); err != nil {
		f.Close()
		return "", fmt.Errorf("build %s: %w", out, err)
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	return out, os.Rename(f.Name(), out)
}

// debianArch names Go's architecture as Debian does.
func debianArch(goarch, goarm string) (string, error) {
	switch goarch {
	case "amd64", "arm64", "386", "riscv64":
		if goarch == "386" {
			return "i386", nil
		}
		return goarch, nil
	case "arm":
		switch goarm {
		case "7", "":
			return "armhf", nil
		case "5", "6":
			return "armel", nil
		}
		return "", fmt.Errorf("-goarm %q: want 5, 6 or 7", goarm)
	case "":
		return "", errors.New("-arch is required (amd64, arm64 or arm)")
	}
	return "", fmt.Errorf("-arch %q: want amd64, arm64 or arm", goarch)
}

var (
	describeRe = regexp.MustCompile(`^v?([0-9][0-9A-Za-z.]*)(?:-([0-9]+)-g([0-9a-f]+))?(-dirty)?$`)
	hashRe     = regexp.MustCompile(`^([0-9a-f]{7,40})(-dirty)?$`)
)

// DebianVersion turns what `git describe --tags --always --dirty` prints
// into a Debian version that sorts as the releases do: v1.2.0 is 1.2.0;
// v1.2.0-3-gabc1234 (three commits later) is 1.2.0+3.gabc1234; without a
// tag, abc1234 is 0.0.0+git.abc1234; -dirty adds .dirty; an empty or
// unrecognised version is 0.0.0+dev.
func DebianVersion(describe string) string {
	d := strings.TrimSpace(describe)
	if m := hashRe.FindStringSubmatch(d); m != nil {
		v := "0.0.0+git." + m[1]
		if m[2] != "" {
			v += ".dirty"
		}
		return v
	}
	if m := describeRe.FindStringSubmatch(d); m != nil {
		v := m[1]
		var extra []string
		if m[2] != "" {
			extra = append(extra, m[2], "g"+m[3])
		}
		if m[4] != "" {
			extra = append(extra, "dirty")
		}
		if len(extra) > 0 {
			v += "+" + strings.Join(extra, ".")
		}
		return v
	}
	return "0.0.0+dev"
}
