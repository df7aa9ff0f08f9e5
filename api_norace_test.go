//go:build !race

package forkd_test

const apiRace = false
