package command

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/forkd/forkd/master"
)

func status(c *cli.Context) error {
	if c.Bool("cluster") {
		return clusterStatus(c)
	}
	resp, err := master.Call(c.String("run-dir"), master.Request{Cmd: "status"}, 30*time.Second)
	if err != nil {
		return err
	}
	st := resp.Status
	if c.Bool("json") {
		return json.NewEncoder(os.Stdout).Encode(st)
	}
	reactors := ""
	if st.ReactorNum > 0 {
		reactors = fmt.Sprintf("   reactor threads %d", st.ReactorNum)
	}
	fmt.Printf("mode %s   master pid %d   uptime %s   dispatch %s%s   connections %d   master rss %s\n",
		st.Mode, st.MasterPid, (time.Duration(st.UptimeSec) * time.Second).String(), st.Dispatch, reactors, st.Connections, mib(st.MasterRSS))
	for _, l := range st.Listeners {
		proto := l.Protocol
		if l.TLS {
			proto += ", tls"
		}
		if l.CertExpires != "" {
			proto += ", certificate " + l.CertSubject + " expires " + l.CertExpires
		}
		fmt.Printf("listener %-6s %s (%s)\n", l.Name, l.Addr, proto)
	}
	if st.MetricsAddr != "" {
		fmt.Printf("metrics  http://%s/metrics\n", st.MetricsAddr)
	}
	if st.Cluster != nil {
		fmt.Println(clusterLine(st.Cluster))
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKIND\tPID\tSTATE\tCONNS\tREQUESTS\tRSS\tRESTARTS\tUPTIME\tBUS QUEUED/DROPPED\tNOTE")
	for _, w := range append(append(st.Workers, st.TaskWorkers...), st.Processes...) {
		note := ""
		if w.Backoff != "" {
			note = "crash loop, next try in " + w.Backoff + ": " + w.LastExit
		}
		if w.SilentSec > 0 {
			note = fmt.Sprintf("no answer to the master's ping for %.1fs: no new work; killed at 2x --worker-timeout", w.SilentSec)
		}
		reqs := fmt.Sprint(w.Requests)
		if w.Kind == "task" {
			reqs = fmt.Sprintf("%d tasks, %d queued", w.TasksDone, w.TasksQueued)
		}
		bus := fmt.Sprintf("%dB/%d", w.BusQueued+w.BusPending, w.BusDropped+w.BusDroppedOut)
		kind := w.Kind
		if w.Name != "" {
			kind += " " + w.Name
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%d\t%s\t%s\t%d\t%s\t%s\t%s\n", w.ID, kind, w.Pid, w.State, w.Connections, reqs,
			mib(w.RSS), w.Restarts, (time.Duration(w.UptimeSec) * time.Second).String(), bus, note)
	}
	return tw.Flush()
}

func mib(b int64) string { return fmt.Sprintf("%.1fMiB", float64(b)/(1<<20)) }

func connections(c *cli.Context) error {
	if c.Bool("cluster") {
		return clusterConnections(c)
	}
	if c.Bool("json") { // as the master sent it: no decoding and encoding again
		list, missing, err := master.CallConnectionsJSON(c.String("run-dir"), 30*time.Second)
		if err != nil {
			return err
		}
		_, err = os.Stdout.Write(append(list, '\n'))
		if len(missing) > 0 { // stdout stays the array scripts parse
			fmt.Fprintln(os.Stderr, missingLine(missing))
		}
		return err
	}
	resp, err := master.Call(c.String("run-dir"), master.Request{Cmd: "connections"}, 30*time.Second)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tWORKER\tLISTENER\tREMOTE\tPROTOCOL\tPATH\tSINCE\tIN\tOUT")
	for _, i := range resp.Connections {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%d\t%d\n", i.ID, i.Worker, i.Listener, i.Remote, i.Protocol, i.Path, i.Since, i.BytesIn, i.BytesOut)
	}
	fmt.Fprintf(tw, "%d connections\n", len(resp.Connections))
	if len(resp.MissingWorkers) > 0 {
		fmt.Fprintln(tw, missingLine(resp.MissingWorkers))
	}
	return tw.Flush()
}

// missingLine names the workers whose connections `connections` could not
// list (BASE mode: each holds its own). A partial listing is still an
// answer: the command exits 0, and says what it lacks.
func missingLine(ids []int) string {
	who, their := workersNamed(ids)
	return who + " did not answer within 2s: " + their + " connections are not listed"
}

// workersNamed is "worker 1", "its" or "workers 1, 3", "their".
func workersNamed(ids []int) (who, their string) {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = strconv.Itoa(id)
	}
	if len(ids) > 1 {
		return "workers " + strings.Join(s, ", "), "their"
	}
	return "worker " + s[0], "its"
}
