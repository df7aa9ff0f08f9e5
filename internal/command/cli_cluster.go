package command

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
	"github.com/urfave/cli/v2/altsrc"

	"github.com/forkd/forkd/cluster"
	"github.com/forkd/forkd/master"
	"github.com/forkd/forkd/reactor"
)

// EnvCluster and EnvClusterToken set --cluster and --cluster-token.
const (
	EnvCluster      = master.EnvCluster
	EnvClusterToken = master.EnvClusterToken
)

// clusterFlags are start's cluster flags (docs/cluster.md); each is also a
// key of the --config file.
func clusterFlags() []cli.Flag {
	return []cli.Flag{
		altsrc.NewStringSliceFlag(&cli.StringSliceFlag{Name: "cluster", EnvVars: []string{EnvCluster},
			Usage: "nats://HOST:PORT[,nats://...]: join the cluster on these NATS servers (nats://USER:PASS@HOST:PORT for credentials)"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "node", Usage: "this node's name in the cluster, unique (a duplicate is refused)", DefaultText: "the hostname"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "cluster-embed", Usage: "HOST:PORT: run a NATS server inside the master there (other nodes join with --cluster nats://HOST:PORT)"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "cluster-route-addr", Usage: "HOST:PORT: the embedded NATS server accepts routes from other NATS servers there (other nodes' --cluster-routes)"}),
		altsrc.NewStringSliceFlag(&cli.StringSliceFlag{Name: "cluster-routes", Usage: "nats-route://HOST:PORT[,...]: the embedded NATS server routes to these NATS servers (another node's --cluster-route-addr), forming one NATS cluster"}),
		altsrc.NewDurationFlag(ranged(&cli.DurationFlag{Name: "cluster-timeout", Value: time.Second, Usage: "bound of one cross-node operation; beyond it the push answers 503 (unavailable)"})),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "cluster-token", EnvVars: []string{EnvClusterToken}, Usage: "NATS auth token (prefer FORKD_CLUSTER_TOKEN)"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "cluster-creds", Usage: "NATS credentials file (JWT and nkey seed)"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "cluster-ca", Usage: "PEM CA that signs the NATS servers' certificates (tls://)"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "cluster-cert", Usage: "PEM client certificate for NATS"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "cluster-key", Usage: "PEM client key for NATS"}),
	}
}

// clusterListFlag asks status and connections for every node.
var clusterListFlag = &cli.BoolFlag{Name: "cluster", Usage: "every node of the cluster"}

// clusterOptions reads the flags above into o (nil Cluster without
// --cluster or --cluster-embed: nothing of the cluster runs).
func clusterOptions(c *cli.Context, o *master.Options) error {
	var urls []string
	for _, v := range c.StringSlice("cluster") {
		for _, u := range strings.Split(v, ",") {
			if u = strings.TrimSpace(u); u == "" {
				continue
			}
			if err := checkNATSURL(u); err != nil {
				return fmt.Errorf("--cluster %q: %w", redactURL(u), err)
			}
			urls = append(urls, u)
		}
	}
	embed := c.String("cluster-embed")
	var routes []string
	for _, v := range c.StringSlice("cluster-routes") {
		for _, r := range strings.Split(v, ",") {
			if r = strings.TrimSpace(r); r != "" {
				routes = append(routes, r)
			}
		}
	}
	if embed == "" && (len(routes) > 0 || c.String("cluster-route-addr") != "") {
		return errors.New("--cluster-routes and --cluster-route-addr: only with --cluster-embed (they route its NATS server)")
	}
	if len(urls) == 0 && embed == "" {
		for _, f := range []string{"node", "cluster-token", "cluster-creds", "cluster-ca", "cluster-cert", "cluster-key"} {
			if c.String(f) != "" && c.IsSet(f) {
				return fmt.Errorf("--%s: only with --cluster or --cluster-embed", f)
			}
		}
		return nil
	}
	name := c.String("node")
	if strings.ContainsAny(name, " \t\r\n") {
		return fmt.Errorf("--node %q: a node name has no spaces", name)
	}
	if c.String("cluster-cert") != "" && c.String("cluster-key") == "" || c.String("cluster-cert") == "" && c.String("cluster-key") != "" {
		return errors.New("--cluster-cert and --cluster-key go together")
	}
	o.Cluster = &cluster.Config{URLs: urls, Name: name, Embed: embed,
		RouteAddr: c.String("cluster-route-addr"), Routes: routes, Timeout: c.Duration("cluster-timeout"),
		Token: c.String("cluster-token"), Creds: c.String("cluster-creds"), CAFile: c.String("cluster-ca"),
		CertFile: c.String("cluster-cert"), KeyFile: c.String("cluster-key")}
	return nil
}

func clusterState(c *cli.Context) (*master.Status, error) {
	resp, err := master.Call(c.String("run-dir"), master.Request{Cmd: "status"}, 30*time.Second)
	if err != nil {
		return nil, err
	}
	if resp.Status.Cluster == nil {
		return nil, errors.New("this server is not in a cluster (start it with --cluster or --cluster-embed)")
	}
	return resp.Status, nil
}

// clusterLine is plain status's one line about the cluster: this node, its
// link to NATS (or why it did not join) and how many nodes are up.
func clusterLine(cs *cluster.State) string {
	switch {
	case cs.Refused != "":
		return fmt.Sprintf("cluster  node %s not joined: %s; serving locally", cs.Name, cs.Refused)
	case !cs.Connected:
		return fmt.Sprintf("cluster  node %s (number %d)   NATS unreachable: serving locally, reconnecting", cs.Name, cs.Node)
	case cs.Node == 0:
		return fmt.Sprintf("cluster  node %s   connected to %s, joining", cs.Name, cs.Server)
	}
	return fmt.Sprintf("cluster  node %s (number %d)   connected to %s   %d nodes up (status --cluster lists them)", cs.Name, cs.Node, cs.Server, len(cs.Nodes))
}

// clusterStatus prints the nodes that are up.
func clusterStatus(c *cli.Context) error {
	st, err := clusterState(c)
	if err != nil {
		return err
	}
	cs := st.Cluster
	if c.Bool("json") {
		return json.NewEncoder(os.Stdout).Encode(cs)
	}
	conn := "connected to " + cs.Server
	if !cs.Connected {
		conn = "NATS unreachable: serving locally, reconnecting"
	}
	fmt.Printf("node %s (number %d)   %s   rooms listened to %d   dropped %d\n", cs.Name, cs.Node, conn, cs.Rooms, cs.Dropped)
	if cs.Embedded != "" {
		fmt.Printf("embedded NATS server: %s (other nodes join with --cluster %s)\n", cs.Embedded, cs.Embedded)
		if cs.RouteAddr != "" {
			fmt.Printf("its routes: accepted at %s (other nodes' --cluster-routes), %d up\n", cs.RouteAddr, cs.Routes)
		}
	}
	if cs.Refused != "" {
		fmt.Printf("not joined: %s\n", cs.Refused)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tNAME\tMODE\tWORKERS\tCONNS\tPID\tUP SINCE\tDROPPED")
	for _, n := range cs.Nodes {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%d\t%d\t%s\t%d\n", n.Node, n.Name, n.Mode, n.Workers, n.Conns, n.Pid, n.Since.UTC().Format(time.RFC3339), n.Dropped)
	}
	fmt.Fprintf(tw, "%d nodes up\n", len(cs.Nodes))
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, n := range cs.Nodes {
		if len(n.Uncounted) > 0 {
			fmt.Printf("node %s (number %d): %s\n", n.Name, n.Node, uncountedLine(n.Uncounted))
		}
	}
	return nil
}

// uncountedLine names the BASE workers left out of a node's CONNS.
func uncountedLine(ids []int) string {
	who, their := workersNamed(ids)
	return who + " did not answer the count in time: " + their + " connections are not in CONNS"
}

// clusterConnections streams every node's connections, a page at a time
// (--json: one JSON object per line, each with its node). What it could
// not list is named as `connections` names it (missingLine), one line
// per node: a node's workers that did not answer in time, or a node that
// gave no page at all. That is a partial answer, exit 0; a failure of this
// server's master is the command's failure.
func clusterConnections(c *cli.Context) error {
	st, err := clusterState(c)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(os.Stdout)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	if !c.Bool("json") {
		fmt.Fprintln(tw, "NODE\tID\tWORKER\tLISTENER\tREMOTE\tPROTOCOL\tPATH\tSINCE")
	}
	total := 0
	var failed, gaps []string
	nodes := st.Cluster.Nodes
	self := false
	for _, n := range nodes {
		self = self || n.Node == st.Cluster.Node
	}
	if !self || st.Cluster.Node == 0 { // not joined yet: its own connections still count
		nodes = append([]cluster.NodeInfo{{Node: st.Cluster.Node, Name: st.Cluster.Name}}, nodes...)
	}
	for _, n := range nodes {
		node := fmt.Sprintf("node %s (number %d)", n.Name, n.Node)
		var missing []int
		for off := 0; ; {
			resp, err := master.Call(c.String("run-dir"), master.Request{Cmd: "cluster-connections", Node: n.Node, Offset: off}, 30*time.Second)
			if errors.Is(err, master.ErrNodeNoAnswer) {
				gaps = append(gaps, fmt.Sprintf("%s %v: its connections are not listed", node, err)) // err: "did not answer within 10s"
				break
			}
			if err != nil {
				failed = append(failed, fmt.Sprintf("node %d (%s): %v", n.Node, n.Name, err))
				break
			}
			for _, id := range resp.MissingWorkers {
				if !slices.Contains(missing, id) {
					missing = append(missing, id)
				}
			}
			for _, raw := range resp.Page {
				total++
				if c.Bool("json") {
					var obj map[string]any
					if json.Unmarshal(raw, &obj) == nil {
						obj["node"] = n.Name
						enc.Encode(obj)
					}
					continue
				}
				var i reactor.Info
				if json.Unmarshal(raw, &i) == nil {
					fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", n.Name, i.ID, i.Worker, i.Listener, i.Remote, i.Protocol, i.Path, i.Since)
				}
			}
			if len(resp.Page) < master.ClusterPage {
				break
			}
			off += len(resp.Page)
		}
		if len(missing) > 0 {
			slices.Sort(missing)
			gaps = append(gaps, node+": "+missingLine(missing))
		}
		if !c.Bool("json") {
			tw.Flush()
		}
	}
	out := os.Stdout
	if c.Bool("json") {
		out = os.Stderr // stdout stays the objects scripts parse
	} else {
		fmt.Fprintf(tw, "%d connections on %d nodes\n", total, len(nodes))
		tw.Flush()
	}
	for _, g := range gaps {
		fmt.Fprintln(out, g)
	}
	if len(failed) > 0 {
		return fmt.Errorf("connections --cluster: %s", strings.Join(failed, "; "))
	}
	return nil
}

// checkNATSURL refuses what nats.go would take and never reach: a scheme
// of another protocol (it ignores the scheme: http:// "connected"), no
// host, or a port out of range (it retried forever, "unreachable").
func checkNATSURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || !strings.Contains(s, "://") || u.Hostname() == "" {
		return errors.New("want nats://HOST:PORT")
	}
	switch u.Scheme {
	case "nats", "tls", "ws", "wss":
	default:
		return fmt.Errorf("scheme %q: want nats://, tls://, ws:// or wss://", u.Scheme)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("port %q: want 1 to 65535", p)
		}
	}
	return nil
}

// redactURL hides the credentials of a NATS URL in an error.
func redactURL(s string) string {
	if u, err := url.Parse(s); err == nil && u.User != nil {
		u.User = url.User("REDACTED")
		return u.String()
	}
	return s
}
