package main

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/gitfleet/gitfleet/schema"
)

func newSchemaCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "schema",
		Short: "The fleet manifest schema: its reference and a JSON Schema for editors",
	}
	cmd.AddCommand(newSchemaJSONCmd(), newSchemaReferenceCmd())
	return cmd
}

func newSchemaJSONCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "json",
		Short: "Print a JSON Schema of every manifest kind (for editor completion)",
		Long: `Print a JSON Schema (draft 2020-12) of the fleet manifests, generated from the
schema 'gitfleet validate' uses. Point an editor's YAML support at it for
completion, field documentation and checking as you type. Rules that need the
whole fleet (references between manifests, exactly one of several fields,
policies) are checked by 'gitfleet validate' only.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			js, err := schema.JSONSchema()
			if err != nil {
				return failed(err)
			}
			_, err = cmd.OutOrStdout().Write(js)
			return err
		},
	}
}

func newSchemaReferenceCmd() *cobra.Command {
	var (
		out      string
		examples []string
	)
	cmd := &cobra.Command{
		Use:   "reference --out DIR [--examples DIR]...",
		Short: "Write the manifest reference (one Markdown page per kind) and the JSON Schema",
		Long: `Write the fleet manifest reference, generated from the schema: DIR/README.md
(the kinds and the named types), one page per kind listing every field with its
type, whether it is required and what it means, followed by every manifest of
that kind found in the --examples directories, and DIR/gitfleet.schema.json.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return fmt.Errorf("--out is required: the directory to write the reference into")
			}
			ex := map[string]fs.FS{}
			for _, dir := range examples {
				info, err := os.Stat(dir)
				if err != nil {
					return failed(fmt.Errorf("--examples: %w", err))
				}
				if !info.IsDir() {
					return failed(fmt.Errorf("--examples %s: not a directory", dir))
				}
				ex[filepath.ToSlash(filepath.Clean(dir))] = os.DirFS(dir)
			}
			ref, err := schema.Reference()
			if err != nil {
				return failed(err)
			}
			files, err := ref.Files(ex)
			if err != nil {
				return failed(err)
			}
			if err := os.MkdirAll(out, 0o755); err != nil {
				return failed(err)
			}
			names := slices.Sorted(func(yield func(string) bool) {
				for n := range files {
					if !yield(n) {
						return
					}
				}
			})
			for _, name := range names {
				if err := os.WriteFile(filepath.Join(out, name), files[name], 0o644); err != nil {
					return failed(err)
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %d files to %s: %s\n", len(names), out, strings.Join(names, ", "))
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "directory to write into (made when missing)")
	cmd.Flags().StringArrayVar(&examples, "examples", nil, "a fleet repository whose manifests are quoted as examples; repeat for several")
	return cmd
}
