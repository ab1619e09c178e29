package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"podnet/lab"
)

// newLabGraphCmd is `podnet lab graph`: a picture of the running lab.
func newLabGraphCmd(name *string) *cobra.Command {
	var format, file string
	cmd := &cobra.Command{
		Use:   "graph [--format text|dot|mermaid|svg] [-o FILE]",
		Short: "Draw the lab: fabric, nodes, tunnels, blocks, pods, BGP sessions, encapsulation",
		Long: `Draw the running lab from live data: the fabric and its subnets, each node
with its underlay and tunnel addresses, IPAM blocks and use, pods and BGP
sessions, and which encapsulation each node uses to reach the others.
text is for the terminal; dot (Graphviz), mermaid (Markdown) and svg (drawn
by podnet, no Graphviz needed) are for files. With -o FILE and no
--format, the format follows FILE's extension (.dot .gv .mmd .md .svg).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format == "" {
				format = formatFor(file)
			}
			if !contains(lab.GraphFormats, format) {
				return usagef("--format %q: want one of %s", format, strings.Join(lab.GraphFormats, ", "))
			}
			l, err := openLab(*name)
			if err != nil {
				return err
			}
			g, err := l.Graph(cmd.Context())
			if err != nil {
				return fmt.Errorf("graph of lab %s: %w", *name, err)
			}
			var buf bytes.Buffer
			if err := g.Write(&buf, format); err != nil {
				return err
			}
			if file == "" || file == "-" {
				_, err := cmd.OutOrStdout().Write(buf.Bytes())
				return err
			}
			if err := os.WriteFile(file, buf.Bytes(), 0o644); err != nil {
				return fmt.Errorf("write graph: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (%s)\n", file, format)
			return nil
		},
	}
	cmd.Flags().StringVar(&format, "format", "", "text, dot, mermaid or svg (default: from -o's extension, else text)")
	cmd.Flags().StringVarP(&file, "output", "o", "", "write to FILE instead of stdout")
	return cmd
}

// formatFor picks a graph format from a file name's extension.
func formatFor(file string) string {
	switch strings.ToLower(filepath.Ext(file)) {
	case ".dot", ".gv":
		return lab.GraphDOT
	case ".mmd", ".mermaid", ".md":
		return lab.GraphMermaid
	case ".svg":
		return lab.GraphSVG
	}
	return lab.GraphText
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
