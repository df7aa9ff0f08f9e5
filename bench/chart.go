package bench

import (
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"
)

// modeColors gives each mode one colour across every panel.
var modeColors = map[string]color.Color{
	modeBaseline: color.RGBA{R: 0x88, G: 0x88, B: 0x88, A: 0xff},
	"process":    color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	"base":       color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
	modeNginx:    color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
}

// writeChart draws one panel per scenario, one bar per mode, to path (.svg
// or .png). The bars are ops per server CPU-second, the fair figure when the
// load generator shares the machine; the idle panel shows KiB of server RSS
// per idle connection instead (lower is better). Each panel has its own
// scale, since scenarios differ by orders of magnitude.
func writeChart(path string, rep *Report) error {
	var scenarios []string
	for _, r := range rep.Results {
		if !slices.Contains(scenarios, r.Scenario) {
			scenarios = append(scenarios, r.Scenario)
		}
	}
	if len(scenarios) == 0 {
		return fmt.Errorf("bench: chart: no results")
	}
	cols := min(3, len(scenarios))
	rows := (len(scenarios) + cols - 1) / cols
	plots := make([][]*plot.Plot, rows)
	for j := range plots {
		plots[j] = make([]*plot.Plot, cols)
	}
	for k, sc := range scenarios {
		p, err := scenarioPanel(sc, rep.Results)
		if err != nil {
			return err
		}
		plots[k/cols][k%cols] = p
	}
	w, h := vg.Length(cols)*3.6*vg.Inch, vg.Length(rows)*3*vg.Inch+0.4*vg.Inch
	var c interface {
		vg.CanvasWriterTo
	}
	switch strings.ToLower(filepath.Ext(path)) {
	case ".svg":
		c = vgsvg.New(w, h)
	case ".png":
		c = vgimg.PngCanvas{Canvas: vgimg.NewWith(vgimg.UseWH(w, h), vgimg.UseDPI(110))}
	default:
		return fmt.Errorf("bench: chart %q: want a .svg or .png file name", path)
	}
	dc := draw.New(c)
	title := fmt.Sprintf("server bench: %d workers, %d conns, %s per scenario", rep.Workers, rep.Conns, rep.Duration)
	dc.SetColor(color.White)
	dc.Fill(dc.Rectangle.Path())
	head := plot.New().Title.TextStyle
	head.Font.Size = vg.Points(13)
	dc.FillText(head, vg.Point{X: w / 2, Y: h - 0.25*vg.Inch}, title)
	body := dc
	body.Max.Y -= 0.4 * vg.Inch
	tiles := draw.Tiles{Rows: rows, Cols: cols, PadX: 0.3 * vg.Inch, PadY: 0.3 * vg.Inch,
		PadTop: 0.1 * vg.Inch, PadBottom: 0.1 * vg.Inch, PadLeft: 0.1 * vg.Inch, PadRight: 0.2 * vg.Inch}
	canvases := plot.Align(plots, tiles, body)
	for j := range plots {
		for i, p := range plots[j] {
			if p != nil {
				p.Draw(canvases[j][i])
			}
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("bench: chart: %w", err)
	}
	if _, err := c.WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("bench: chart: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("bench: chart: %w", err)
	}
	return nil
}

// scenarioPanel is one scenario's bar chart.
func scenarioPanel(sc string, rs []*Result) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = sc
	p.Y.Label.Text = map[string]string{ScenarioHTTP: "requests", ScenarioEcho: "messages", ScenarioPush: "deliveries",
		ScenarioUIDPush:   "uid deliveries",
		ScenarioBroadcast: "member deliveries", ScenarioConnect: "connections",
		ScenarioClusterPush: "deliveries", ScenarioClusterBroadcast: "member deliveries"}[sc] + " / server CPU-s"
	if sc == ScenarioIdle {
		p.Title.Text = "idle (lower is better)"
		p.Y.Label.Text = "KiB RSS per connection"
	}
	p.Y.Min = 0
	p.Y.Tick.Marker = siTicks{}
	var names, vsNginx []string
	var labels plotter.XYLabels
	top := 0.0
	for _, r := range rs {
		if r.Scenario != sc {
			continue
		}
		if r.RatioNginx != nil {
			vsNginx = append(vsNginx, fmt.Sprintf("%s %.2fx", r.Mode, *r.RatioNginx))
		}
		x := float64(len(names))
		names = append(names, r.Mode)
		v, label := r.OpsPerCPU, ""
		switch {
		case r.NA:
			label = "n/a"
			v = 0
		case r.Error != "":
			label = "error"
			v = 0
		case sc == ScenarioIdle && r.Idle != nil:
			v = r.Idle.KiBPerConn
			label = fmt.Sprintf("%.1f", v)
		default:
			label = siNumber(v)
			if r.Ratio != nil && r.Mode != modeBaseline {
				label += fmt.Sprintf(" (%.2fx)", *r.Ratio)
			}
		}
		top = max(top, v)
		bar, err := plotter.NewBarChart(plotter.Values{max(v, 0)}, vg.Points(38))
		if err != nil {
			return nil, fmt.Errorf("bench: chart: %w", err)
		}
		bar.XMin = x
		bar.LineStyle.Width = 0
		if col, ok := modeColors[r.Mode]; ok {
			bar.Color = col
		}
		p.Add(bar)
		labels.XYs = append(labels.XYs, plotter.XY{X: x, Y: max(v, 0)})
		labels.Labels = append(labels.Labels, label)
	}
	if len(vsNginx) > 0 {
		p.Title.Text += " (vs nginx: " + strings.Join(vsNginx, ", ") + ")"
	}
	if top <= 0 {
		top = 1
	}
	p.Y.Max = top * 1.18 // room for the value labels
	for i := range labels.XYs {
		labels.XYs[i].Y += top * 0.02
	}
	lb, err := plotter.NewLabels(labels)
	if err != nil {
		return nil, fmt.Errorf("bench: chart: %w", err)
	}
	for i := range lb.TextStyle {
		lb.TextStyle[i].XAlign = draw.XCenter
		lb.TextStyle[i].Font.Size = vg.Points(9)
	}
	p.Add(lb)
	p.NominalX(names...)
	return p, nil
}

// siNumber prints 123456 as 123k.
func siNumber(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.0fk", v/1e3)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	default:
		return fmt.Sprintf("%.0f", v)
	}
}

// siTicks labels the default ticks with k/M suffixes.
type siTicks struct{}

func (siTicks) Ticks(min, max float64) []plot.Tick {
	ts := plot.DefaultTicks{}.Ticks(min, max)
	for i := range ts {
		if ts[i].Label != "" {
			if max >= 1e3 {
				ts[i].Label = siNumber(ts[i].Value)
			}
		}
	}
	return ts
}
