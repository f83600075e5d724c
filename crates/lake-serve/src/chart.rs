//! `[charts.<name>]` drawn as SVG (plotters): the query's `x` column along the axis, one
//! series per `y` column.

use lake::core::ValueError;
use lake::core::config::{ChartKind, ChartSpec};
use lake::local::engine::datafusion::arrow::array::{Array, AsArray, RecordBatch};
use lake::local::engine::datafusion::arrow::compute::cast;
use lake::local::engine::datafusion::arrow::datatypes::{DataType, Float64Type};
use lake::local::engine::datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use plotters::prelude::*;

/// Rows a chart reads at most.
pub const MAX_POINTS: usize = 10_000;

/// The chart `name` of `lake`'s lake.toml, drawn over the committed data as an SVG document
/// (800 × 450).
pub async fn render(lake: &lake::Lake, name: &str) -> lake::core::Result<String> {
    let spec = lake
        .pipeline
        .charts
        .get(name)
        .ok_or_else(|| lake::core::Error::Invalid {
            what: format!("chart {name}"),
            message: format!(
                "no [charts.{name}] in {}; charts: {}",
                lake.pipeline.file.display(),
                lake.pipeline
                    .charts
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })?;
    let invalid = |message: ValueError| lake::core::Error::Invalid {
        what: format!(
            "{} charts.{name} (line {})",
            lake.pipeline.file.display(),
            spec.line
        ),
        message: message.into(),
    };
    if spec.kind == ChartKind::Table {
        return Err(invalid(
            "a table chart is shown by lake serve, not drawn".into(),
        ));
    }
    let (_, batches) = lake.query_rows(&spec.sql, MAX_POINTS).await?;
    svg(spec, &series(spec, &batches).map_err(invalid)?, 800, 450).map_err(invalid)
}

/// `svg` as a PNG image, its text set in a sans-serif font of this system (DejaVu Sans or
/// Liberation Sans when installed, else the first font found).
pub fn png(svg: &str) -> Result<Vec<u8>, String> {
    use resvg::{tiny_skia, usvg};
    let mut opt = usvg::Options::default();
    let fonts = opt.fontdb_mut();
    fonts.load_system_fonts();
    let family = ["DejaVu Sans", "Liberation Sans", "Noto Sans", "Arial"]
        .into_iter()
        .find(|f| fonts.faces().any(|face| face.families.iter().any(|(n, _)| n == f)))
        .map(str::to_owned)
        .or_else(|| {
            fonts
                .faces()
                .next()
                .and_then(|f| f.families.first().map(|(n, _)| n.clone()))
        })
        .ok_or("no font on this system for the chart's text: install one (apt-get install fonts-dejavu-core), or write .svg")?;
    fonts.set_sans_serif_family(family);
    let tree = usvg::Tree::from_str(svg, &opt).map_err(|e| e.to_string())?;
    let size = tree.size().to_int_size();
    let mut pixmap = tiny_skia::Pixmap::new(size.width(), size.height())
        .ok_or("the chart has no area to draw")?;
    resvg::render(&tree, tiny_skia::Transform::default(), &mut pixmap.as_mut());
    pixmap.encode_png().map_err(|e| e.to_string())
}

/// A chart's data: the x labels and each series' values (`None` where null).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The x values as text, in row order.
    pub x: Vec<String>,
    /// `(column, values)` per y column.
    pub y: Vec<(String, Vec<Option<f64>>)>,
}

/// The chart's columns out of `batches`: an error naming a missing column, or a y column that
/// is not numeric.
pub fn series(spec: &ChartSpec, batches: &[RecordBatch]) -> Result<Series, ValueError> {
    let opts = FormatOptions::default();
    let mut x = Vec::new();
    let mut y: Vec<(String, Vec<Option<f64>>)> =
        spec.y.iter().map(|c| (c.clone(), Vec::new())).collect();
    for b in batches {
        let schema = b.schema();
        let column = |name: &str| {
            schema.index_of(name).map(|i| b.column(i)).map_err(|_| {
                format!(
                    "chart {}: the query has no column {name:?}; its columns are {}",
                    spec.name,
                    schema
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
        };
        let xs = column(&spec.x)?;
        let f = ArrayFormatter::try_new(xs.as_ref(), &opts).map_err(|e| e.to_string())?;
        x.extend((0..xs.len()).map(|i| f.value(i).to_string()));
        for (name, values) in &mut y {
            let col = column(name)?;
            let numbers = cast(col, &DataType::Float64).map_err(|_| {
                format!(
                    "chart {}: column {name:?} is {}, not a number",
                    spec.name,
                    col.data_type()
                )
            })?;
            let numbers = numbers.as_primitive::<Float64Type>();
            values
                .extend((0..numbers.len()).map(|i| numbers.is_valid(i).then(|| numbers.value(i))));
        }
    }
    Ok(Series { x, y })
}

/// The chart as an SVG document (`width` × `height` pixels).
pub fn svg(spec: &ChartSpec, data: &Series, width: u32, height: u32) -> Result<String, ValueError> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (width, height)).into_drawing_area();
        draw(&root, spec, data).map_err(|e| format!("chart {}: {e}", spec.name))?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    spec: &ChartSpec,
    data: &Series,
) -> Result<(), Box<dyn std::error::Error + 'static>>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let n = data.x.len();
    let values = data.y.iter().flat_map(|(_, v)| v.iter().flatten().copied());
    let (mut lo, mut hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    if matches!(spec.kind, ChartKind::Bar | ChartKind::Area) {
        lo = lo.min(0.0);
        hi = hi.max(0.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-9);
    let (lo, hi) = (lo - pad, hi + pad);
    let x_max = if n > 1 { (n - 1) as f64 } else { 1.0 };
    let (x_lo, x_hi) = match spec.kind {
        ChartKind::Bar => (-0.5, x_max + 0.5),
        _ => (0.0, x_max),
    };
    let mut chart = ChartBuilder::on(root)
        .caption(&spec.title, ("sans-serif", 20))
        .margin(12)
        .margin_right(40)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(x_lo..x_hi, lo..hi)?;
    let label = |v: &f64| {
        let i = v.round();
        if (v - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < n {
            data.x[i as usize].clone()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .x_labels(n.clamp(2, 8))
        .x_label_formatter(&label)
        .x_desc(&spec.x)
        .draw()?;
    let series_count = data.y.len().max(1) as f64;
    for (i, (name, values)) in data.y.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points: Vec<(f64, f64)> = values
            .iter()
            .enumerate()
            .filter_map(|(j, v)| v.map(|v| (j as f64, v)))
            .collect();
        let legend = match spec.kind {
            ChartKind::Line | ChartKind::Table => {
                chart.draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?;
                chart.draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))?
            }
            ChartKind::Area => {
                chart.draw_series(
                    AreaSeries::new(points.clone(), 0.0, color.mix(0.25)).border_style(color),
                )?;
                chart.draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))?
            }
            ChartKind::Scatter => {
                chart.draw_series(points.iter().map(|p| Circle::new(*p, 4, color.filled())))?
            }
            ChartKind::Bar => {
                let w = 0.8 / series_count;
                chart.draw_series(points.iter().map(|&(x, v)| {
                    let left = x - 0.4 + w * i as f64;
                    Rectangle::new([(left, 0.0), (left + w, v)], color.filled())
                }))?
            }
        };
        legend
            .label(name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK.mix(0.3))
        .draw()?;
    Ok(())
}
