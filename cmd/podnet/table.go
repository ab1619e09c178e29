package main

import (
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// borderTable prints rows the way calicoctl's ipam commands do:
//
//	+------+------+
//	| NAME | CIDR |
//	+------+------+
//	| a    | b    |
//	+------+------+
//
// right lists the columns aligned right (numbers).
func borderTable(w io.Writer, header []string, rows [][]string, right ...int) {
	width := make([]int, len(header))
	for i, h := range header {
		width[i] = utf8.RuneCountInString(h)
	}
	for _, r := range rows {
		for i, c := range r {
			width[i] = max(width[i], utf8.RuneCountInString(c))
		}
	}
	isRight := map[int]bool{}
	for _, c := range right {
		isRight[c] = true
	}
	line := func() {
		for _, n := range width {
			fmt.Fprint(w, "+", strings.Repeat("-", n+2))
		}
		fmt.Fprintln(w, "+")
	}
	row := func(cells []string, center bool) {
		for i, c := range cells {
			pad := width[i] - utf8.RuneCountInString(c)
			switch {
			case center:
				l := pad / 2
				fmt.Fprintf(w, "| %s%s%s ", strings.Repeat(" ", l), c, strings.Repeat(" ", pad-l))
			case isRight[i]:
				fmt.Fprintf(w, "| %s%s ", strings.Repeat(" ", pad), c)
			default:
				fmt.Fprintf(w, "| %s%s ", c, strings.Repeat(" ", pad))
			}
		}
		fmt.Fprintln(w, "|")
	}
	line()
	row(header, true)
	line()
	for _, r := range rows {
		row(r, false)
	}
	line()
}
