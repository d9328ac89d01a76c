// Package clitest holds the checks every fm binary's tests make of the
// conventions pkg/cli sets: --version, and numeric flags refused at parse
// time with an error naming the flag.
package clitest
