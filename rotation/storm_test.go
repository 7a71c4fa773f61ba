package rotation

import (
	"slices"
	"testing"
	"time"
)

var stormT0 = time.Date(2026, 1, 15, 18, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return stormT0.Add(d) }

func ms(d time.Duration) int64 { return at(d).UnixMilli() }

// stormStep is one event on a provider's storm state: a failure (fail
// set), a success, or only a look at the clock.
type stormStep struct {
	at      time.Duration // since stormT0
	succeed bool
	fail    bool
	key     int64
	rate    bool
	hint    time.Duration

	// After the step.
	storm, started bool
	keys           []int64       // Storm.Keys, in order
	since          time.Duration // Storm.Since - stormT0; -1: zero
	last           time.Duration // Storm.Last - stormT0; -1: zero
	until          time.Duration // Storm.Until - stormT0; -1: zero
	active         bool          // Active at the step's time
	wait           time.Duration // Wait at the step's time
}

func fail(atD time.Duration, key int64, rate bool, hint time.Duration) stormStep {
	return stormStep{at: atD, fail: true, key: key, rate: rate, hint: hint, last: atD}
}

// calm, storming and began fill in what a step expects.
func (s stormStep) calm(since time.Duration, keys ...int64) stormStep {
	s.since, s.keys, s.until = since, keys, -1
	return s
}

func (s stormStep) storming(started bool, since, until time.Duration, keys ...int64) stormStep {
	s.storm, s.started, s.keys, s.since, s.until = true, started, keys, since, until
	s.active, s.wait = true, until-s.at
	return s
}

func TestStormTransitions(t *testing.T) {
	three := StormPolicy{Keys: 3, Window: 30 * time.Second, Hold: 10 * time.Second}
	sec := time.Second
	tests := []struct {
		name   string
		policy StormPolicy
		steps  []stormStep
	}{
		{"fewer distinct keys than Keys: calm", three, []stormStep{
			fail(0, 1, true, 0).calm(0, 1),
			fail(sec, 2, true, 0).calm(0, 1, 2),
		}},
		{"the same key failing again counts once", three, []stormStep{
			fail(0, 1, true, 0).calm(0, 1),
			fail(sec, 1, true, 0).calm(0, 1),
			fail(2*sec, 1, false, 0).calm(0, 1),
			fail(3*sec, 1, true, 0).calm(0, 1),
			fail(4*sec, 2, true, 0).calm(0, 1, 2),
			fail(5*sec, 2, true, 0).calm(0, 1, 2),
		}},
		{"Keys distinct keys within Window declare a storm", three, []stormStep{
			fail(0, 1, true, 0).calm(0, 1),
			fail(sec, 2, true, 0).calm(0, 1, 2),
			fail(2*sec, 3, true, 0).storming(true, 0, 12*sec, 1, 2, 3),
		}},
		{"declared at the window's last millisecond", three, []stormStep{
			fail(0, 1, true, 0).calm(0, 1),
			fail(sec, 2, true, 0).calm(0, 1, 2),
			fail(30*sec, 3, true, 0).storming(true, 0, 40*sec, 1, 2, 3),
		}},
		{"one millisecond past the window starts a new run", three, []stormStep{
			fail(0, 1, true, 0).calm(0, 1),
			fail(sec, 2, true, 0).calm(0, 1, 2),
			fail(30*sec+time.Millisecond, 3, true, 0).calm(30*sec+time.Millisecond, 3),
			fail(31*sec, 1, true, 0).calm(30*sec+time.Millisecond, 3, 1),
			fail(32*sec, 2, true, 0).storming(true, 30*sec+time.Millisecond, 42*sec, 3, 1, 2),
		}},
		{"the window counts from the run's first failure", three, []stormStep{
			fail(0, 1, true, 0).calm(0, 1),
			fail(20*sec, 2, true, 0).calm(0, 1, 2),
			fail(31*sec, 3, true, 0).calm(31*sec, 3),
		}},
		{"further failures during the storm: storm, not started", three, []stormStep{
			fail(0, 1, true, 0).calm(0, 1),
			fail(sec, 2, true, 0).calm(0, 1, 2),
			fail(2*sec, 3, true, 0).storming(true, 0, 12*sec, 1, 2, 3),
			fail(5*sec, 4, true, 0).storming(false, 0, 15*sec, 1, 2, 3),
			fail(6*sec, 1, false, 0).storming(false, 0, 16*sec, 1, 2, 3),
			fail(7*sec, 9, true, 0).storming(false, 0, 17*sec, 1, 2, 3),
		}},
		{"a storm keeps its run open while failures go on", three, []stormStep{
			fail(0, 1, true, 0).calm(0, 1),
			fail(sec, 2, true, 0).calm(0, 1, 2),
			fail(2*sec, 3, true, 0).storming(true, 0, 12*sec, 1, 2, 3),
			fail(25*sec, 4, true, 0).storming(false, 0, 35*sec, 1, 2, 3),
			fail(50*sec, 5, true, 0).storming(false, 0, 60*sec, 1, 2, 3), // 48 s after the first failure
		}},
		{"a declared storm lasts while failures come within Window of each other", three, []stormStep{
			fail(0, 1, true, 0).calm(0, 1),
			fail(sec, 2, true, 0).calm(0, 1, 2),
			fail(2*sec, 3, true, 0).storming(true, 0, 12*sec, 1, 2, 3),
			fail(32*sec, 4, true, 0).storming(false, 0, 42*sec, 1, 2, 3), // exactly Window after the last
			fail(62*sec, 5, true, 0).storming(false, 0, 72*sec, 1, 2, 3),
			fail(92*sec, 6, false, 0).storming(false, 0, 102*sec, 1, 2, 3),
		}},
		{"a declared storm's run ends Window+1ms after its last failure", three, []stormStep{
			fail(0, 1, true, 0).calm(0, 1),
			fail(sec, 2, true, 0).calm(0, 1, 2),
			fail(2*sec, 3, true, 0).storming(true, 0, 12*sec, 1, 2, 3),
			fail(32*sec+time.Millisecond, 1, true, 0).calm(32*sec+time.Millisecond, 1).withUntil(12*sec, false),
		}},
		{"before a storm, the window counts from Since, not the last failure", three, []stormStep{
			fail(0, 1, true, 0).calm(0, 1),
			fail(29*sec, 2, true, 0).calm(0, 1, 2),
			fail(31*sec, 3, true, 0).calm(31*sec, 3),
		}},
		{"a new run after the window re-declares and starts again", three, []stormStep{
			fail(0, 1, true, 0).calm(0, 1),
			fail(sec, 2, true, 0).calm(0, 1, 2),
			fail(2*sec, 3, true, 0).storming(true, 0, 12*sec, 1, 2, 3),
			fail(33*sec, 4, true, 0).calm(33*sec, 4).withUntil(12*sec, false),
			fail(34*sec, 5, true, 0).calm(33*sec, 4, 5).withUntil(12*sec, false),
			fail(35*sec, 6, true, 0).storming(true, 33*sec, 45*sec, 4, 5, 6),
		}},
		{"a new run keeps a hold that has not ended yet", three, []stormStep{
			fail(0, 1, true, 0).calm(0, 1),
			fail(sec, 2, true, 0).calm(0, 1, 2),
			fail(2*sec, 3, true, time.Minute).storming(true, 0, 62*sec, 1, 2, 3),
			fail(40*sec, 4, true, 0).calm(40*sec, 4).withUntil(62*sec, true),
		}},
		{"a hint longer than Hold extends the storm", three, []stormStep{
			fail(0, 1, true, 20*sec).calm(0, 1),
			fail(sec, 2, true, 20*sec).calm(0, 1, 2),
			fail(2*sec, 3, true, 25*sec).storming(true, 0, 27*sec, 1, 2, 3),
		}},
		{"a hint shorter than Hold does not shorten it", three, []stormStep{
			fail(0, 1, true, 0).calm(0, 1),
			fail(sec, 2, true, 0).calm(0, 1, 2),
			fail(2*sec, 3, true, 2*sec).storming(true, 0, 12*sec, 1, 2, 3),
		}},
		{"a hint is capped at one minute", three, []stormStep{
			fail(0, 1, true, 0).calm(0, 1),
			fail(sec, 2, true, 0).calm(0, 1, 2),
			fail(2*sec, 3, true, time.Hour).storming(true, 0, 62*sec, 1, 2, 3),
		}},
		{"a later, shorter hold does not cut a running one", three, []stormStep{
			fail(0, 1, true, 0).calm(0, 1),
			fail(sec, 2, true, 0).calm(0, 1, 2),
			fail(2*sec, 3, true, 50*sec).storming(true, 0, 52*sec, 1, 2, 3),
			fail(4*sec, 4, true, 0).storming(false, 0, 52*sec, 1, 2, 3),
		}},
		{"Hold above one minute is capped", StormPolicy{Keys: 2, Hold: 5 * time.Minute}, []stormStep{
			fail(0, 1, true, 0).calm(0, 1),
			fail(sec, 2, true, 0).storming(true, 0, 61*sec, 1, 2),
		}},
		{"a storm ends when its hold does", three, []stormStep{
			fail(0, 1, true, 0).calm(0, 1),
			fail(sec, 2, true, 0).calm(0, 1, 2),
			fail(2*sec, 3, true, 0).storming(true, 0, 12*sec, 1, 2, 3),
			{at: 11*sec + 999*time.Millisecond, active: true, wait: time.Millisecond},
			{at: 12 * sec, active: false, wait: 0},
			{at: 20 * sec, active: false, wait: 0},
		}},
		{"success resets", three, []stormStep{
			fail(0, 1, true, 0).calm(0, 1),
			fail(sec, 2, true, 0).calm(0, 1, 2),
			fail(2*sec, 3, true, 0).storming(true, 0, 12*sec, 1, 2, 3),
			{at: 3 * sec, succeed: true, since: -1, until: -1},
			fail(4*sec, 3, true, 0).calm(4*sec, 3),
			fail(5*sec, 4, true, 0).calm(4*sec, 3, 4),
			fail(6*sec, 5, true, 0).storming(true, 4*sec, 16*sec, 3, 4, 5),
		}},
		{"success before a storm forgets the run", three, []stormStep{
			fail(0, 1, true, 0).calm(0, 1),
			fail(sec, 2, true, 0).calm(0, 1, 2),
			{at: 2 * sec, succeed: true, since: -1, until: -1},
			fail(3*sec, 3, true, 0).calm(3*sec, 3),
		}},
		{"defaults: 5 keys, 30 s window, 10 s hold", StormPolicy{}, []stormStep{
			fail(0, 1, true, 0).calm(0, 1),
			fail(sec, 2, false, 0).calm(0, 1, 2),
			fail(2*sec, 3, true, 0).calm(0, 1, 2, 3),
			fail(29*sec, 4, true, 0).calm(0, 1, 2, 3, 4),
			fail(30*sec, 5, true, 0).storming(true, 0, 40*sec, 1, 2, 3, 4, 5),
		}},
		{"defaults: the window is 30 s", StormPolicy{}, []stormStep{
			fail(0, 1, true, 0).calm(0, 1),
			fail(sec, 2, true, 0).calm(0, 1, 2),
			fail(2*sec, 3, true, 0).calm(0, 1, 2, 3),
			fail(3*sec, 4, true, 0).calm(0, 1, 2, 3, 4),
			fail(30*sec+time.Millisecond, 5, true, 0).calm(30*sec+time.Millisecond, 5),
		}},
		{"negative policy values mean defaults", StormPolicy{Keys: -1, Window: -time.Second, Hold: -time.Second}, []stormStep{
			fail(0, 1, true, 0).calm(0, 1),
			fail(sec, 2, true, 0).calm(0, 1, 2),
			fail(2*sec, 3, true, 0).calm(0, 1, 2, 3),
			fail(3*sec, 4, true, 0).calm(0, 1, 2, 3, 4),
			fail(4*sec, 5, true, 0).storming(true, 0, 14*sec, 1, 2, 3, 4, 5),
		}},
		{"one key makes a storm when Keys is 1", StormPolicy{Keys: 1, Window: time.Second, Hold: time.Second}, []stormStep{
			fail(0, 7, false, 0).storming(true, 0, sec, 7),
			fail(500*time.Millisecond, 7, false, 0).storming(false, 0, 1500*time.Millisecond, 7),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s Storm
			if s.Active(stormT0) || s.Wait(stormT0) != 0 {
				t.Fatalf("the zero Storm is not calm")
			}
			for i, st := range tt.steps {
				now := at(st.at)
				switch {
				case st.succeed:
					s = s.Succeed()
					if s.Since != 0 || s.Last != 0 || s.Until != 0 || s.Keys != nil || s.Rate || s.Declared {
						t.Fatalf("step %d: Succeed left %+v", i, s)
					}
				case st.fail:
					var storm, started bool
					s, storm, started = tt.policy.Fail(s, st.key, st.rate, st.hint, now)
					if storm != st.storm || started != st.started {
						t.Fatalf("step %d (key %d at %v): storm, started = %v, %v; want %v, %v (state %+v)",
							i, st.key, st.at, storm, started, st.storm, st.started, s)
					}
					if !slices.Equal(s.Keys, st.keys) {
						t.Errorf("step %d: Keys = %v, want %v", i, s.Keys, st.keys)
					}
					if s.Rate != st.rate {
						t.Errorf("step %d: Rate = %v, want %v (the last failure's)", i, s.Rate, st.rate)
					}
					if s.Declared != st.storm {
						t.Errorf("step %d: Declared = %v while storm = %v", i, s.Declared, st.storm)
					}
					checkMs(t, i, "Since", s.Since, st.since)
					checkMs(t, i, "Last", s.Last, st.last)
					checkMs(t, i, "Until", s.Until, st.until)
				}
				if got := s.Active(now); got != st.active {
					t.Errorf("step %d: Active = %v, want %v (state %+v)", i, got, st.active, s)
				}
				if got := s.Wait(now); got != st.wait {
					t.Errorf("step %d: Wait = %v, want %v", i, got, st.wait)
				}
			}
		})
	}
}

// withUntil sets the hold a calm step keeps from an earlier storm.
func (s stormStep) withUntil(until time.Duration, active bool) stormStep {
	s.until, s.active = until, active
	if active {
		s.wait = until - s.at
	}
	return s
}

func checkMs(t *testing.T, step int, field string, got int64, want time.Duration) {
	t.Helper()
	w := int64(0)
	if want >= 0 {
		w = ms(want)
	}
	if got != w {
		t.Errorf("step %d: %s = %d (t0%+dms), want t0%+dms", step, field, got, got-stormT0.UnixMilli(), w-stormT0.UnixMilli())
	}
}

func TestStormActiveWait(t *testing.T) {
	until := ms(10 * time.Second)
	tests := []struct {
		name   string
		s      Storm
		now    time.Duration
		active bool
		wait   time.Duration
	}{
		{"zero storm", Storm{}, 0, false, 0},
		{"before the hold ends", Storm{Until: until}, 0, true, 10 * time.Second},
		{"1 ms before", Storm{Until: until}, 10*time.Second - time.Millisecond, true, time.Millisecond},
		{"sub-millisecond before rounds down to the previous ms", Storm{Until: until}, 10*time.Second - time.Microsecond, true, time.Millisecond},
		{"at the end", Storm{Until: until}, 10 * time.Second, false, 0},
		{"after the end", Storm{Until: until}, time.Hour, false, 0},
		{"a run without a hold", Storm{Since: ms(0), Keys: []int64{1, 2}}, time.Second, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.s.Active(at(tt.now)); got != tt.active {
				t.Errorf("Active = %v, want %v", got, tt.active)
			}
			if got := tt.s.Wait(at(tt.now)); got != tt.wait {
				t.Errorf("Wait = %v, want %v", got, tt.wait)
			}
		})
	}
}

// Fail works on a copy: the caller's Storm, and the array behind its Keys,
// are never written, even when that array has room to grow.
func TestStormFailDoesNotAlias(t *testing.T) {
	p := StormPolicy{Keys: 4, Window: 30 * time.Second, Hold: 10 * time.Second}
	backing := []int64{1, 2, -1, -1, -1, -1}
	in := Storm{Since: ms(0), Keys: backing[:2], Until: 0, Rate: false}
	inCopy := in
	inCopy.Keys = slices.Clone(in.Keys)

	a, _, _ := p.Fail(in, 3, true, 0, at(time.Second))
	b, _, _ := p.Fail(in, 4, true, 0, at(time.Second))
	if !slices.Equal(backing, []int64{1, 2, -1, -1, -1, -1}) {
		t.Fatalf("Fail wrote into the input's backing array: %v", backing)
	}
	if !slices.Equal(a.Keys, []int64{1, 2, 3}) || !slices.Equal(b.Keys, []int64{1, 2, 4}) {
		t.Fatalf("two Fails from one state interfere: %v and %v", a.Keys, b.Keys)
	}
	if in.Since != inCopy.Since || in.Until != inCopy.Until || in.Rate != inCopy.Rate || in.Declared != inCopy.Declared || !slices.Equal(in.Keys, inCopy.Keys) {
		t.Fatalf("Fail changed its input: %+v, was %+v", in, inCopy)
	}

	// Growing one branch further leaves the other alone.
	a2, storm, started := p.Fail(a, 5, true, 0, at(2*time.Second))
	if !storm || !started {
		t.Fatalf("4 distinct keys: storm, started = %v, %v", storm, started)
	}
	if !slices.Equal(a2.Keys, []int64{1, 2, 3, 5}) || !slices.Equal(a.Keys, []int64{1, 2, 3}) || !slices.Equal(b.Keys, []int64{1, 2, 4}) {
		t.Fatalf("branches interfere: a2 %v, a %v, b %v", a2.Keys, a.Keys, b.Keys)
	}
	b2, _, _ := p.Fail(b, 6, true, 0, at(2*time.Second))
	if !slices.Equal(b2.Keys, []int64{1, 2, 4, 6}) || !slices.Equal(a2.Keys, []int64{1, 2, 3, 5}) {
		t.Fatalf("branches interfere: b2 %v, a2 %v", b2.Keys, a2.Keys)
	}

	// Once full, further failures share nothing they could write.
	full := a2
	fullKeys := slices.Clone(full.Keys)
	c, _, _ := p.Fail(full, 9, false, 0, at(3*time.Second))
	if !slices.Equal(full.Keys, fullKeys) || full.Rate != true || full.Declared != true || full.Since != ms(0) || full.Last != ms(2*time.Second) {
		t.Fatalf("Fail changed a full storm it was given: %+v", full)
	}
	if c.Rate || !c.Declared || c.Since != ms(0) || c.Last != ms(3*time.Second) {
		t.Fatalf("next state %+v", c)
	}

	// A new run does not reuse the old Keys array.
	old := Storm{Since: ms(0), Keys: []int64{1, 2, 3}[:2:3]}
	oldBacking := old.Keys[:3]
	n, _, _ := p.Fail(old, 7, true, 0, at(time.Minute))
	if oldBacking[2] != 3 {
		t.Fatalf("a new run wrote into the old Keys array: %v", oldBacking)
	}
	if !slices.Equal(n.Keys, []int64{7}) {
		t.Fatalf("new run Keys = %v", n.Keys)
	}

	// Succeed returns a state of its own.
	_ = a2.Succeed()
	if !slices.Equal(a2.Keys, []int64{1, 2, 3, 5}) || !a2.Declared {
		t.Fatalf("Succeed changed its receiver: %+v", a2)
	}
}

// Keys never grows past the policy's Keys, however many keys fail.
func TestStormKeysBounded(t *testing.T) {
	p := StormPolicy{Keys: 3, Window: time.Minute, Hold: time.Second}
	var s Storm
	for k := int64(1); k <= 100; k++ {
		s, _, _ = p.Fail(s, k, k%2 == 0, 0, at(time.Duration(k)*100*time.Millisecond))
		if len(s.Keys) > 3 {
			t.Fatalf("after key %d: %d keys kept", k, len(s.Keys))
		}
	}
	if !slices.Equal(s.Keys, []int64{1, 2, 3}) {
		t.Errorf("Keys = %v, want the first three", s.Keys)
	}
}
