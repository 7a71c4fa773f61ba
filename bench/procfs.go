package main

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Linux reports utime and stime in USER_HZ ticks, which is 100 on every
// architecture Go supports (sysconf(_SC_CLK_TCK) needs cgo to ask).
const ticksPerSecond = 100

// procStat is what the benchmark needs from /proc/<pid>/stat.
type procStat struct {
	pid, ppid, pgrp int
	comm            string
	cpuTicks        uint64 // utime + stime
}

func readStat(pid int) (procStat, bool) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return procStat{}, false
	}
	// comm is in parentheses and may contain spaces or parentheses itself:
	// the fields after it start after the last ')'.
	lp, rp := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if lp < 0 || rp < lp {
		return procStat{}, false
	}
	f := strings.Fields(string(b[rp+1:]))
	// f[0] is field 3 (state): ppid is field 4, pgrp 5, utime 14, stime 15.
	if len(f) < 13 {
		return procStat{}, false
	}
	ppid, _ := strconv.Atoi(f[1])
	pgrp, _ := strconv.Atoi(f[2])
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	return procStat{pid: pid, ppid: ppid, pgrp: pgrp, comm: string(b[lp+1 : rp]), cpuTicks: ut + st}, true
}

// allProcs reads every process's stat.
func allProcs() []procStat {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []procStat
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if s, ok := readStat(pid); ok {
			out = append(out, s)
		}
	}
	return out
}

// descendants returns the processes below root in the process tree
// (children, grandchildren, ...), found through their ppid.
func descendants(root int) []procStat {
	procs := allProcs()
	children := map[int][]procStat{}
	for _, p := range procs {
		children[p.ppid] = append(children[p.ppid], p)
	}
	var out []procStat
	queue := []int{root}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		for _, c := range children[pid] {
			out = append(out, c)
			queue = append(queue, c.pid)
		}
	}
	return out
}

// groupAlive reports whether any process is left in process group pgid.
func groupAlive(pgid int) bool {
	for _, p := range allProcs() {
		if p.pgrp == pgid {
			return true
		}
	}
	return false
}

// cpuTicks sums utime+stime of pids; gone counts the pids that vanished.
func cpuTicks(pids []int) (ticks uint64, gone int) {
	for _, pid := range pids {
		s, ok := readStat(pid)
		if !ok {
			gone++
			continue
		}
		ticks += s.cpuTicks
	}
	return ticks, gone
}

// rssBytes sums VmRSS of pids.
func rssBytes(pids []int) int64 {
	var total int64
	for _, pid := range pids {
		f, err := os.Open(filepath.Join("/proc", strconv.Itoa(pid), "status"))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := sc.Text()
			if !strings.HasPrefix(line, "VmRSS:") {
				continue
			}
			fs := strings.Fields(line)
			if len(fs) >= 2 {
				kb, _ := strconv.ParseInt(fs[1], 10, 64)
				total += kb * 1024
			}
			break
		}
		f.Close()
	}
	return total
}

// machineTicks reads the first line of /proc/stat: busy and total ticks of
// all CPUs together.
func machineTicks() (busy, total uint64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, 0
	}
	for i, s := range f[1:] {
		if i >= 8 { // guest time is already counted in user
			break
		}
		v, _ := strconv.ParseUint(s, 10, 64)
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, total
}

// selfTicks is this process's own utime+stime (the load generator and the
// fake upstream).
func selfTicks() uint64 {
	s, _ := readStat(os.Getpid())
	return s.cpuTicks
}
