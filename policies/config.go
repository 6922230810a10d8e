package policies

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/gitfleet/gitfleet/schema"
)

// config is what ConfigFile selects.
type config struct {
	packs []packRef
	errs  schema.Errors // problems in ConfigFile
}

// packRef is one selected built-in pack; severity, when set, overrides
// the severity of every policy of the pack.
type packRef struct {
	name     string
	severity Severity
}

// readConfig reads ConfigFile from fsys. A missing file selects nothing.
// Problems in the file are returned in config.errs; err is for failures to
// read it at all.
func readConfig(fsys fs.FS) (config, error) {
	b, err := readRegular(fsys, ConfigFile)
	if errors.Is(err, fs.ErrNotExist) {
		return config{}, nil
	}
	if err != nil {
		var perr *problem
		if errors.As(err, &perr) {
			return config{errs: schema.Errors{{File: ConfigFile, Msg: perr.msg}}}, nil
		}
		return config{}, fmt.Errorf("read %s: %w", ConfigFile, err)
	}
	return parseConfig(b), nil
}

func parseConfig(b []byte) config {
	var cfg config
	bad := func(n *yaml.Node, format string, args ...any) {
		e := &schema.Error{File: ConfigFile, Msg: fmt.Sprintf(format, args...)}
		if n != nil {
			e.Line, e.Col = n.Line, n.Column
		}
		cfg.errs = append(cfg.errs, e)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		e := &schema.Error{File: ConfigFile, Msg: strings.TrimPrefix(err.Error(), "yaml: ")}
		// yaml.v3 says where as a "line N: " prefix.
		if rest, ok := strings.CutPrefix(e.Msg, "line "); ok {
			if n, msg, ok := strings.Cut(rest, ": "); ok {
				if line, err := strconv.Atoi(n); err == nil {
					e.Line, e.Msg = line, msg
				}
			}
		}
		cfg.errs = append(cfg.errs, e)
		return cfg
	}
	if len(doc.Content) == 0 {
		return cfg // an empty file selects nothing
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		bad(root, "want a mapping with the field packs")
		return cfg
	}
	known := Packs()
	seen := make(map[string]bool)
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if k.Value != "packs" {
			bad(k, "unknown field %q (want packs)", k.Value)
			continue
		}
		if v.Kind != yaml.SequenceNode {
			bad(v, "packs: want a list of pack names")
			continue
		}
		for j, item := range v.Content {
			field := fmt.Sprintf("packs[%d]", j)
			ref, ok := parsePackRef(item, func(n *yaml.Node, format string, args ...any) {
				bad(n, field+": "+format, args...)
			})
			if !ok {
				continue
			}
			switch {
			case !slices.Contains(known, ref.name):
				bad(item, "%s: unknown pack %q (built-in packs: %s)", field, ref.name, strings.Join(known, ", "))
			case seen[ref.name]:
				bad(item, "%s: pack %q is listed twice", field, ref.name)
			default:
				seen[ref.name] = true
				cfg.packs = append(cfg.packs, ref)
			}
		}
	}
	return cfg
}

// parsePackRef reads one entry of packs: a pack name, or a mapping with
// name and severity.
func parsePackRef(n *yaml.Node, bad func(*yaml.Node, string, ...any)) (packRef, bool) {
	switch n.Kind {
	case yaml.ScalarNode:
		return packRef{name: n.Value}, true
	case yaml.MappingNode:
		var ref packRef
		ok := true
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			switch k.Value {
			case "name":
				ref.name = v.Value
			case "severity":
				ref.severity = Severity(v.Value)
				if ref.severity != Deny && ref.severity != Warn {
					bad(v, "severity: want deny or warn, not %q", v.Value)
					ok = false
				}
			default:
				bad(k, "unknown field %q (want name, severity)", k.Value)
				ok = false
			}
		}
		if ref.name == "" {
			bad(n, "name: a pack name is required")
			ok = false
		}
		return ref, ok
	}
	bad(n, "want a pack name or a mapping with name and severity")
	return packRef{}, false
}

// policyFile is the source of one policy file: one of the repository's or
// a built-in pack.
type policyFile struct {
	file     string   // path shown in errors
	pack     string   // built-in pack name; empty for the repository's files
	src      []byte   //
	severity Severity // overrides every policy's severity when set
}

// readPolicyFiles reads the repository's policies/*.cue files.
func readPolicyFiles(fsys fs.FS) ([]policyFile, schema.Errors) {
	entries, err := fs.ReadDir(fsys, Dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, schema.Errors{{File: Dir, Msg: err.Error()}}
	}
	var files []policyFile
	var errs schema.Errors
	for _, e := range entries {
		if path.Ext(e.Name()) != ".cue" || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		name := path.Join(Dir, e.Name())
		if !e.Type().IsRegular() {
			errs = append(errs, &schema.Error{File: name, Msg: "policy file is not a regular file (symbolic links are not followed)"})
			continue
		}
		b, err := readRegular(fsys, name)
		if err != nil {
			var perr *problem
			if !errors.As(err, &perr) {
				err = fmt.Errorf("read: %w", err)
			}
			errs = append(errs, &schema.Error{File: name, Msg: err.Error()})
			continue
		}
		files = append(files, policyFile{file: name, src: b})
	}
	return files, errs
}

// problem is a file that is there but not acceptable (too big, not a
// regular file).
type problem struct{ msg string }

func (p *problem) Error() string { return p.msg }

// readRegular reads the regular file name from fsys, refusing symbolic
// links and files over schema.MaxFileSize.
func readRegular(fsys fs.FS, name string) ([]byte, error) {
	fi, err := fs.Lstat(fsys, name)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, &problem{"not a regular file (symbolic links are not followed)"}
	}
	f, err := fsys.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, schema.MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > schema.MaxFileSize {
		return nil, &problem{fmt.Sprintf("file is larger than %d bytes", schema.MaxFileSize)}
	}
	return b, nil
}
