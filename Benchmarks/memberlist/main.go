// Command memberlist-bench runs several HashiCorp memberlist instances in one process on one
// address, joins them into one cluster, and runs one measure chosen by -mode:
//
//	crash   stops one member with Shutdown and no Leave, which is how memberlist simulates a
//	        crash. It times how long until every other member gets NotifyLeave for it. This
//	        repeats -rounds times with a fresh victim, which then rejoins under a new name.
//	steady  runs for -duration and counts NotifyLeave events, all about live members.
//	serve   runs -nodes members joined to -join (or to each other), prints every membership
//	        event and a status line "status UNIX_MS MIN_LIVE MAX_LIVE" every 100 ms, and exits
//	        after -duration. run.sh runs two of these, one per side of a partition.
//
// Every member uses memberlist.DefaultLANConfig() and changes only Name, BindAddr, BindPort and
// AdvertisePort (0: any free port), the event delegate and the log output. Results are plain
// "key value" lines on stdout.
package main

import (
	"flag"
	"fmt"
	"io"
	"io/ioutil"
	"log"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// eventLog receives the events of one member and forwards them to the shared recorder.
type eventLog struct {
	observer string
	recorder *recorder
}

func (e *eventLog) NotifyJoin(node *memberlist.Node) { e.recorder.record(e.observer, "join", node) }

func (e *eventLog) NotifyLeave(node *memberlist.Node) { e.recorder.record(e.observer, "leave", node) }

func (e *eventLog) NotifyUpdate(node *memberlist.Node) {}

// leaveEvent is one NotifyLeave: which member reported which node, and when.
type leaveEvent struct {
	observer string
	subject  string
	at       time.Time
}

// recorder collects NotifyLeave events of every member, and prints every event when verbose.
type recorder struct {
	mutex   sync.Mutex
	leaves  []leaveEvent
	verbose bool
}

func (r *recorder) record(observer, kind string, node *memberlist.Node) {
	now := time.Now()
	r.mutex.Lock()
	defer r.mutex.Unlock()
	if kind == "leave" {
		r.leaves = append(r.leaves, leaveEvent{observer: observer, subject: node.Name, at: now})
	}
	if r.verbose {
		fmt.Printf("event %d %s %s %s\n", now.UnixMilli(), observer, kind, node.Name)
	}
}

// leavesAbout returns, for each observer, the first NotifyLeave about subject at or after since.
func (r *recorder) leavesAbout(subject string, since time.Time) map[string]time.Time {
	r.mutex.Lock()
	defer r.mutex.Unlock()
	first := map[string]time.Time{}
	for _, event := range r.leaves {
		if event.subject != subject || event.at.Before(since) {
			continue
		}
		if _, seen := first[event.observer]; !seen {
			first[event.observer] = event.at
		}
	}
	return first
}

func (r *recorder) leaveCount() int {
	r.mutex.Lock()
	defer r.mutex.Unlock()
	return len(r.leaves)
}

// memberlistLog receives memberlist's own log lines when -memberlist-log is set.
var memberlistLog io.Writer

// startMember creates one member with the LAN defaults on bindAddress and port (0: any free port).
func startMember(name, bindAddress string, port int, events *recorder) (*memberlist.Memberlist, error) {
	config := memberlist.DefaultLANConfig()
	config.Name = name
	config.BindAddr = bindAddress
	config.BindPort = port
	config.AdvertisePort = port
	config.Events = &eventLog{observer: name, recorder: events}
	config.LogOutput = ioutil.Discard
	if memberlistLog != nil {
		config.LogOutput = memberlistLog
	}
	return memberlist.Create(config)
}

func address(member *memberlist.Memberlist) string {
	node := member.LocalNode()
	return fmt.Sprintf("%s:%d", node.Addr, node.Port)
}

// waitForAlive waits until every member in members counts want live members, itself included.
func waitForAlive(members []*memberlist.Memberlist, want int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		converged := true
		for _, member := range members {
			if member != nil && member.NumMembers() != want {
				converged = false
				break
			}
		}
		if converged {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

func startCluster(count int, bindAddress, prefix string, seeds []string, events *recorder) ([]*memberlist.Memberlist, error) {
	members := make([]*memberlist.Memberlist, 0, count)
	for index := 0; index < count; index++ {
		member, err := startMember(fmt.Sprintf("%s%d", prefix, index+1), bindAddress, 0, events)
		if err != nil {
			return members, fmt.Errorf("starting member %d failed: %w", index+1, err)
		}
		members = append(members, member)
		joinTo := seeds
		if len(joinTo) == 0 && index > 0 {
			joinTo = []string{address(members[0])}
		}
		if len(joinTo) > 0 {
			if _, err := member.Join(joinTo); err != nil {
				return members, fmt.Errorf("member %d failed to join %v: %w", index+1, joinTo, err)
			}
		}
	}
	return members, nil
}

func shutdownAll(members []*memberlist.Memberlist) {
	for _, member := range members {
		if member != nil {
			member.Shutdown()
		}
	}
}

func summary(values []float64) string {
	if len(values) == 0 {
		return "none"
	}
	sorted := append([]float64(nil), values...)
	sort.Float64s(sorted)
	middle := len(sorted) / 2
	median := sorted[middle]
	if len(sorted)%2 == 0 {
		median = (sorted[middle-1] + sorted[middle]) / 2
	}
	return fmt.Sprintf("min %.0f median %.0f max %.0f", sorted[0], median, sorted[len(sorted)-1])
}

// measureCrash runs the crash rounds and prints one line per round and a summary, in milliseconds.
func measureCrash(members []*memberlist.Memberlist, rounds int, bindAddress string, events *recorder, settle, timeout time.Duration) {
	var lastVerdicts []float64
	for round := 1; round <= rounds; round++ {
		// Member 1 is the join seed, so the victims rotate through the others.
		victimIndex := 1 + (round-1)%(len(members)-1)
		victim := members[victimIndex]
		victimName := victim.LocalNode().Name

		stoppedAt := time.Now()
		victim.Shutdown()
		members[victimIndex] = nil

		deadline := stoppedAt.Add(timeout)
		var verdicts map[string]time.Time
		for {
			verdicts = events.leavesAbout(victimName, stoppedAt)
			if len(verdicts) >= len(members)-1 || time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if len(verdicts) < len(members)-1 {
			fmt.Printf("round %d victim %s timed_out_after_ms %d reported_by %d of %d\n",
				round, victimName, timeout.Milliseconds(), len(verdicts), len(members)-1)
		} else {
			var first, last time.Duration
			for _, at := range verdicts {
				elapsed := at.Sub(stoppedAt)
				if first == 0 || elapsed < first {
					first = elapsed
				}
				if elapsed > last {
					last = elapsed
				}
			}
			lastVerdicts = append(lastVerdicts, float64(last.Milliseconds()))
			fmt.Printf("round %d victim %s first_ms %d last_ms %d\n", round, victimName, first.Milliseconds(), last.Milliseconds())
		}

		replacement, err := startMember(fmt.Sprintf("%s-r%d", victimName, round), bindAddress, 0, events)
		if err != nil {
			log.Fatalf("restarting %s failed: %v", victimName, err)
		}
		members[victimIndex] = replacement
		if _, err := replacement.Join([]string{address(members[0])}); err != nil {
			log.Fatalf("restarted %s failed to join: %v", victimName, err)
		}
		if !waitForAlive(members, len(members), timeout) {
			log.Fatalf("cluster did not return to %d live members within %v after round %d", len(members), timeout, round)
		}
		time.Sleep(settle)
	}
	fmt.Printf("crash_detection_ms %s rounds %d measured %d\n", summary(lastVerdicts), rounds, len(lastVerdicts))
}

func main() {
	mode := flag.String("mode", "crash", "measure to run: crash, steady or serve")
	nodeCount := flag.Int("nodes", 10, "members to run in this process")
	rounds := flag.Int("rounds", 5, "crash rounds")
	duration := flag.Duration("duration", 300*time.Second, "how long steady and serve run")
	bindAddress := flag.String("bind", "127.0.0.1", "IPv4 address every member binds")
	prefix := flag.String("prefix", "ml-", "member name prefix; members are PREFIX1 to PREFIXN")
	join := flag.String("join", "", "comma-separated HOST:PORT list to join (serve); empty joins member 1")
	expect := flag.Int("expect", 0, "serve: live members to wait for before printing ready (0: -nodes)")
	settle := flag.Duration("settle", 5*time.Second, "crash: wait after the cluster is whole again before the next round")
	timeout := flag.Duration("timeout", 60*time.Second, "crash: maximum wait for verdicts and for the cluster to be whole again")
	logPath := flag.String("memberlist-log", "", "file for memberlist's own log lines (default: discard them)")
	flag.Parse()
	if *logPath != "" {
		file, err := os.Create(*logPath)
		if err != nil {
			log.Fatalf("creating -memberlist-log %s failed: %v", *logPath, err)
		}
		defer file.Close()
		memberlistLog = file
	}

	events := &recorder{verbose: *mode == "serve"}
	var seeds []string
	if *join != "" {
		seeds = strings.Split(*join, ",")
	}
	members, err := startCluster(*nodeCount, *bindAddress, *prefix, seeds, events)
	defer shutdownAll(members)
	if err != nil {
		shutdownAll(members)
		log.Fatal(err)
	}
	ports := make([]string, 0, len(members))
	for _, member := range members {
		ports = append(ports, fmt.Sprint(member.LocalNode().Port))
	}
	fmt.Printf("ports %s\n", strings.Join(ports, ","))

	want := *nodeCount
	if *expect > 0 {
		want = *expect
	}
	if !waitForAlive(members, want, 60*time.Second) {
		shutdownAll(members)
		log.Fatalf("members did not all see %d live members within 60 s", want)
	}
	fmt.Printf("ready %d\n", time.Now().UnixMilli())
	os.Stdout.Sync()

	switch *mode {
	case "crash":
		time.Sleep(*settle)
		measureCrash(members, *rounds, *bindAddress, events, *settle, *timeout)
	case "steady":
		before := events.leaveCount()
		time.Sleep(*duration)
		fmt.Printf("false_positive_leaves %d duration_s %.0f nodes %d\n", events.leaveCount()-before, duration.Seconds(), *nodeCount)
	case "serve":
		// One status line every 100 ms: Unix milliseconds, then the minimum and the maximum
		// count of live members over the members of this process, each counting itself.
		end := time.Now().Add(*duration)
		for time.Now().Before(end) {
			minLive, maxLive := members[0].NumMembers(), 0
			for _, member := range members {
				count := member.NumMembers()
				if count < minLive {
					minLive = count
				}
				if count > maxLive {
					maxLive = count
				}
			}
			fmt.Printf("status %d %d %d\n", time.Now().UnixMilli(), minLive, maxLive)
			time.Sleep(100 * time.Millisecond)
		}
	default:
		shutdownAll(members)
		log.Fatalf("unknown -mode %q: use crash, steady or serve", *mode)
	}
}
