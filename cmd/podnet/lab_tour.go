package main

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"podnet/lab"
)

// newLabTourCmd is `podnet lab tour`: the overlay lesson, live.
func newLabTourCmd(name *string) *cobra.Command {
	var cfg lab.TourConfig
	var steps []string
	for i, s := range lab.TourSteps() {
		steps = append(steps, fmt.Sprintf("  %d. %s", i+1, s))
	}
	cmd := &cobra.Command{
		Use:   "tour [--step N] [--pause]",
		Short: "Walk the overlay lesson in the running lab: commands, live checks, and why",
		Long: `Walk the lesson of docs/tutorial.md in the running lab. Each step prints the
commands it runs and their output, checks the result live, and explains why
it works that way. The exit status is non-zero when a check fails. The lab
is left as found (pool modes restored, the tour's pod and pool deleted).
Steps:
` + strings.Join(steps, "\n"),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if n := len(lab.TourSteps()); cfg.Step < 0 || cfg.Step > n {
				return usagef("--step %d: want 1..%d (0: every step)", cfg.Step, n)
			}
			l, err := openLab(*name)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			cfg.Out = cmd.OutOrStdout()
			cfg.In = cmd.InOrStdin()
			if err := l.Tour(ctx, cfg); err != nil {
				return flatten(err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), "\ntour done: every check passed")
			return nil
		},
	}
	cmd.Flags().IntVar(&cfg.Step, "step", 0, "run only step N (default: all)")
	cmd.Flags().BoolVar(&cfg.Pause, "pause", false, "wait for Enter before each step")
	return cmd
}
