package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

// podnet's exit codes (docs/cli.md). Scripts tell "the command could not
// run" (1) from "it was called wrongly" (2) and from "it ran and found
// something wrong" (3, the checks).
const (
	exitOK       = 0
	exitError    = 1
	exitUsage    = 2
	exitProblems = 3
)

// usageError is a command called wrongly: an unknown command, flag or
// output format, or the wrong arguments.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

// problemsError is a check that ran and found problems (ipam check: leaks;
// datastore status: members that do not answer), after printing them.
type problemsError struct{ msg string }

func (e problemsError) Error() string { return e.msg }

func isUsage(err error) bool {
	var u usageError
	return errors.As(err, &u)
}

// exitCode is the process exit code for what Execute returned.
func exitCode(err error) int {
	var p problemsError
	switch {
	case err == nil:
		return exitOK
	case isUsage(err):
		return exitUsage
	case errors.As(err, &p):
		return exitProblems
	}
	return exitError
}

// setUsageErrors makes every way cobra reports a wrong call a
// usageError: bad flags (and -o values, which formatValue checks while
// flags parse), argument counts, and unknown subcommands — which cobra
// checks only under the root and otherwise answers with help and exit 0.
func setUsageErrors(root *cobra.Command) {
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if args := c.Args; args != nil {
			c.Args = func(cmd *cobra.Command, a []string) error {
				if err := args(cmd, a); err != nil {
					return usageError{err}
				}
				return nil
			}
		}
		if c.HasSubCommands() && c.Run == nil && c.RunE == nil {
			if c.Annotations == nil {
				c.Annotations = map[string]string{}
			}
			c.Annotations[groupAnnotation] = "true"
			c.Args = cobra.ArbitraryArgs
			c.RunE = func(cmd *cobra.Command, a []string) error {
				if len(a) == 0 {
					return cmd.Help()
				}
				msg := fmt.Sprintf("unknown command %q for %q", a[0], cmd.CommandPath())
				if s := cmd.SuggestionsFor(a[0]); len(s) > 0 {
					msg += "; did you mean " + strings.Join(s, " or ") + "?"
				}
				return usageError{errors.New(msg)}
			}
		}
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(root)
	// A group is runnable now only to refuse unknown subcommands; its
	// help shows "podnet nat [command]" alone, as before, not also
	// "podnet nat [flags]".
	const runnable = "Usage:{{if .Runnable}}"
	if t := root.UsageTemplate(); strings.HasPrefix(t, runnable) {
		root.SetUsageTemplate(strings.Replace(t, runnable,
			`Usage:{{if and .Runnable (ne (index .Annotations "`+groupAnnotation+`") "true")}}`, 1))
	}
}

const groupAnnotation = "podnet/group"
