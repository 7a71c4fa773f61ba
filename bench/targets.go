package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

func (s targetSpec) buildDir(root string) string {
	if filepath.IsAbs(s.build) {
		return s.build
	}
	return filepath.Join(root, s.build)
}

// parseFlags reads the flags and the targets they name; a non-zero code
// is the exit status of a bad command line.
func parseFlags() (config, []targetSpec, int) {
	var cfg config
	targets := flag.String("targets", "baseline,go,tinygo", "comma-separated subset of baseline,go,tinygo,before,go-profile, and dir:<build directory> for any other keypool build")
	flag.StringVar(&cfg.beforeDir, "before-dir", "build/before", "build directory of the \"before\" target (e.g. main's code built with `make build-go` and copied there)")
	flag.BoolVar(&cfg.profile, "profile", false, "instead of the table: V8 CPU profiles of the first keypool target (default go-profile, see `make profile`) under load, written to build/profile-*.cpuprofile")
	flag.IntVar(&cfg.soak, "soak", 0, "after the phases, send N non-stream requests at 16 clients to each target (keypool's, and the baseline for reference), sampling workerd RSS every 1000")
	flag.BoolVar(&cfg.quick, "quick", false, "smaller counts and durations, for a smoke run")
	flag.BoolVar(&cfg.loadOnly, "load-only", false, "skip the long streams and large bodies: for quick A/B runs of several builds")
	flag.DurationVar(&cfg.timeout, "timeout", 40*time.Minute, "give up (and stop every wrangler) after this long")
	flag.IntVar(&cfg.keys, "keys", 20, "openai keys imported into each keypool target")
	flag.Parse()
	if cfg.profile && !flagSet("targets") {
		*targets = "go-profile"
	}
	for _, t := range strings.Split(*targets, ",") {
		if t = strings.TrimSpace(t); t != "" {
			cfg.targets = append(cfg.targets, t)
		}
	}
	var specs []targetSpec
	for _, name := range cfg.targets {
		spec, ok := targetNamed(name, cfg.beforeDir)
		if !ok {
			fmt.Fprintf(os.Stderr, "bench: unknown target %q (known: baseline, go, tinygo, before, go-profile, dir:<path>)\n", name)
			return cfg, nil, 2
		}
		specs = append(specs, spec)
	}
	if len(specs) == 0 {
		fmt.Fprintln(os.Stderr, "bench: no targets")
		return cfg, nil, 2
	}
	return cfg, specs, 0
}

// targetNamed is the target a -targets name stands for.
func targetNamed(name, beforeDir string) (targetSpec, bool) {
	if dir, ok := strings.CutPrefix(name, "dir:"); ok {
		// Any other keypool build, e.g. a prototype: dir:build/gc400.
		base := filepath.Base(dir)
		return targetSpec{name: "dir-" + base, label: "keypool-" + base, keypool: true, build: dir}, true
	}
	for _, k := range knownTargets {
		if k.name == name {
			if k.name == "before" {
				k.build = beforeDir
			}
			return k, true
		}
	}
	return targetSpec{}, false
}

// checkBuilds says what to run when wrangler or a target's build is
// missing.
func checkBuilds(root string, specs []targetSpec) error {
	if _, err := os.Stat(wranglerBin(root)); err != nil {
		return errors.New("wrangler is not installed: run `make node_modules` (or `make bench`)")
	}
	for _, s := range specs {
		if s.keypool {
			if _, err := os.Stat(filepath.Join(s.buildDir(root), "app.wasm")); err != nil {
				return fmt.Errorf("%s missing: run `make %s` (or `make bench`)", s.build, strings.ReplaceAll(s.build, "/", "-"))
			}
		}
	}
	return nil
}
