//! From a sensitivity table to a plan: which layers the search may change (pinned and excluded layers
//! stay out of its hands), the budget, the solvers of [`super::search`], and a reason for every choice.

use super::search::{greedy, improve, Dp, Item, Opt, Problem, Solution};
use super::sensitivity::{Measure, Sensitivity};
use super::{Choice, Plan, PlanError, SummaryFile};
use std::collections::{BTreeMap, BTreeSet};

/// How large the searched layers may be.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Budget {
    /// Average stored bits per weight over the searched layers (scales and codebooks included).
    BitsPerWeight(f64),
    /// Total stored bytes of the searched layers.
    Bytes(u64),
}

/// What the user fixed by hand.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Constraints {
    /// Row → cell index: the layer keeps this spec whatever the budget (it still counts in the budget).
    pub pinned: BTreeMap<usize, usize>,
    /// Rows kept as they are (not quantized, not counted in the budget).
    pub excluded: BTreeSet<usize>,
}

/// A solved choice for one layer, with its reason.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LayerChoice {
    pub name: String,
    /// "none" for an excluded layer.
    pub spec: String,
    pub bits: u64,
    pub bits_per_weight: f64,
    /// The measure's cost (what the search sums).
    pub cost: f64,
    pub pinned: bool,
    pub excluded: bool,
    pub why: String,
}

/// The search problem of one sensitivity table under one measure and one set of constraints, solved for
/// every budget at once.
pub struct Mixed {
    pub measure: Measure,
    pub problem: Problem,
    /// Item → row of the sensitivity table.
    pub rows: Vec<usize>,
    /// Item → option → cell index in its row.
    pub cells: Vec<Vec<usize>>,
    pub dp: Dp,
    /// Weights in the searched layers.
    pub numel: u64,
    constraints: Constraints,
}

impl Mixed {
    pub fn new(
        sens: &Sensitivity,
        measure: Measure,
        constraints: &Constraints,
    ) -> Result<Mixed, PlanError> {
        if !sens.available().contains(&measure) {
            return Err(PlanError::Invalid(format!(
                "the {} measure is not available for this model (available: {})",
                measure.label(),
                sens.available()
                    .iter()
                    .map(|m| m.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let mut problem = Problem::default();
        let (mut rows, mut cells, mut numel) = (Vec::new(), Vec::new(), 0u64);
        for (r, layer) in sens.layers.iter().enumerate() {
            if constraints.excluded.contains(&r) {
                continue;
            }
            let pick: Vec<usize> = match constraints.pinned.get(&r) {
                Some(&c) => {
                    let cell = sens.cells[r].get(c).ok_or_else(|| {
                        PlanError::Invalid(format!("{}: no such spec to pin", layer.name))
                    })?;
                    if cell.cost(measure).is_none() {
                        return Err(PlanError::Invalid(format!(
                            "{}: cannot pin {}: {}",
                            layer.name,
                            cell.spec,
                            cell.error.as_deref().unwrap_or("no measurement")
                        )));
                    }
                    vec![c]
                }
                None => (0..sens.candidates.len())
                    .filter(|&c| sens.cells[r][c].cost(measure).is_some())
                    .collect(),
            };
            if pick.is_empty() {
                return Err(PlanError::Invalid(format!(
                    "{}: no candidate quantizes this layer ({})",
                    layer.name,
                    sens.cells[r]
                        .iter()
                        .filter_map(|c| c.error.clone())
                        .next()
                        .unwrap_or_default()
                )));
            }
            problem.items.push(Item {
                name: layer.name.clone(),
                options: pick
                    .iter()
                    .map(|&c| {
                        let cell = &sens.cells[r][c];
                        Opt {
                            label: cell.spec.clone(),
                            bits: cell.bits,
                            cost: cell.cost(measure).expect("filtered"),
                        }
                    })
                    .collect(),
            });
            rows.push(r);
            cells.push(pick);
            numel += layer.numel;
        }
        if problem.items.is_empty() {
            return Err(PlanError::Invalid(
                "every layer is excluded: nothing to search".into(),
            ));
        }
        let dp = Dp::new(&problem);
        Ok(Mixed {
            measure,
            problem,
            rows,
            cells,
            dp,
            numel,
            constraints: constraints.clone(),
        })
    }

    pub fn budget_bits(&self, b: Budget) -> u64 {
        match b {
            // a hair of tolerance, so 16/3 bits per weight over 300 weights is 1600 bits, not 1599
            Budget::BitsPerWeight(x) => {
                (x.max(0.0) * self.numel as f64 * (1.0 + 1e-12)).floor() as u64
            }
            Budget::Bytes(n) => n.saturating_mul(8),
        }
    }

    pub fn bits_per_weight(&self, s: &Solution) -> f64 {
        s.bits as f64 / self.numel.max(1) as f64
    }

    /// The smallest and largest average bits per weight a plan can have.
    pub fn bpw_range(&self) -> (f64, f64) {
        let (lo, hi) = self.problem.size_range();
        (
            lo as f64 / self.numel.max(1) as f64,
            hi as f64 / self.numel.max(1) as f64,
        )
    }

    /// The plan with the least summed cost within the budget. Exact when the DP's table is (every size a
    /// whole number of slots); otherwise the better of the DP's plan on rounded-up sizes and greedy's,
    /// each improved by single-layer changes within the true budget, so it is never worse than greedy.
    pub fn solve(&self, b: Budget) -> Option<Solution> {
        let bits = self.budget_bits(b);
        let dp = self.dp.solve(bits);
        if self.dp.exact {
            return dp;
        }
        [dp, greedy(&self.problem, bits)]
            .into_iter()
            .flatten()
            .map(|s| improve(&self.problem, &s, bits))
            .min_by(|a, b| a.cost.total_cmp(&b.cost))
    }

    pub fn greedy(&self, b: Budget) -> Option<Solution> {
        greedy(&self.problem, self.budget_bits(b))
    }

    /// The cell chosen for every row of the table (None: excluded).
    pub fn chosen_cells(&self, sens: &Sensitivity, s: &Solution) -> Vec<Option<usize>> {
        let mut out = vec![None; sens.layers.len()];
        for (i, &j) in s.choice.iter().enumerate() {
            out[self.rows[i]] = Some(self.cells[i][j]);
        }
        out
    }

    /// Every layer's choice and the reason for it.
    pub fn explain(&self, sens: &Sensitivity, s: &Solution) -> Vec<LayerChoice> {
        let m = self.measure;
        let chosen = self.chosen_cells(sens, s);
        // a layer's sensitivity: the cost of its smallest candidate (what it would suffer at the bottom)
        let smallest = |r: usize| -> Option<usize> {
            (0..sens.candidates.len())
                .filter(|&c| sens.cells[r][c].cost(m).is_some())
                .min_by_key(|&c| sens.cells[r][c].bits)
        };
        let mut ranked: Vec<(usize, f64)> = (0..sens.layers.len())
            .filter(|r| !self.constraints.excluded.contains(r))
            .filter_map(|r| Some((r, sens.cells[r][smallest(r)?].cost(m)?)))
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        let n = ranked.len();
        let rank_text = |r: usize| -> String {
            match ranked.iter().position(|x| x.0 == r) {
                Some(0) if n > 1 => format!("the most sensitive of {n} layers"),
                Some(k) if k + 1 == n && n > 1 => format!("the least sensitive of {n} layers"),
                Some(k) => format!("the {} most sensitive of {n} layers", ordinal(k + 1)),
                None => String::new(),
            }
        };
        let shown = |cell: &super::sensitivity::Cell| -> String {
            match m {
                Measure::WeightSqnr => format!("SQNR {}", fmt_db(cell.weight_sqnr_db())),
                Measure::OutputSqnr => format!(
                    "output SQNR {}",
                    fmt_db(super::sensitivity::db(cell.output_nsr.unwrap_or(f64::NAN)))
                ),
                Measure::Imatrix => format!(
                    "imatrix SQNR {}",
                    fmt_db(super::sensitivity::db(
                        cell.importance_nsr.unwrap_or(f64::NAN)
                    ))
                ),
                Measure::EndToEnd => {
                    let e = cell.end_to_end.expect("end-to-end cells");
                    format!("KL {}, accuracy {:.1} %", fmt_kl(e.kl), 100.0 * e.accuracy)
                }
            }
        };
        let delta = |a: &super::sensitivity::Cell, b: &super::sensitivity::Cell| -> String {
            match m {
                Measure::WeightSqnr => format!(
                    "{} of SQNR ({} -> {})",
                    fmt_db_delta((a.weight_sqnr_db() - b.weight_sqnr_db()).abs()),
                    fmt_db(a.weight_sqnr_db()),
                    fmt_db(b.weight_sqnr_db())
                ),
                Measure::OutputSqnr => {
                    let (x, y) = (
                        super::sensitivity::db(a.output_nsr.unwrap_or(f64::NAN)),
                        super::sensitivity::db(b.output_nsr.unwrap_or(f64::NAN)),
                    );
                    format!(
                        "{} of output SQNR ({} -> {})",
                        fmt_db_delta(x - y),
                        fmt_db(x),
                        fmt_db(y)
                    )
                }
                Measure::Imatrix => {
                    let (x, y) = (
                        super::sensitivity::db(a.importance_nsr.unwrap_or(f64::NAN)),
                        super::sensitivity::db(b.importance_nsr.unwrap_or(f64::NAN)),
                    );
                    format!(
                        "{} of imatrix SQNR ({} -> {})",
                        fmt_db_delta(x - y),
                        fmt_db(x),
                        fmt_db(y)
                    )
                }
                Measure::EndToEnd => {
                    let (x, y) = (a.end_to_end.expect("e2e"), b.end_to_end.expect("e2e"));
                    format!(
                        "KL {} -> {}, accuracy {:.1} -> {:.1} %",
                        fmt_kl(x.kl),
                        fmt_kl(y.kl),
                        100.0 * x.accuracy,
                        100.0 * y.accuracy
                    )
                }
            }
        };
        let mut out = Vec::new();
        for (r, layer) in sens.layers.iter().enumerate() {
            let Some(c) = chosen[r] else {
                out.push(LayerChoice {
                    name: layer.name.clone(),
                    spec: "none".into(),
                    bits: layer.original_bits,
                    bits_per_weight: layer.original_bits as f64 / layer.numel.max(1) as f64,
                    cost: 0.0,
                    pinned: false,
                    excluded: true,
                    why: "excluded from the search: kept as it is".into(),
                });
                continue;
            };
            let cell = &sens.cells[r][c];
            let pinned = self.constraints.pinned.contains_key(&r);
            let rank = rank_text(r);
            let why = if pinned {
                format!(
                    "{}: pinned by the user; {} here ({rank})",
                    super::short_spec(&cell.spec),
                    shown(cell)
                )
            } else {
                let usable = |k: &usize| sens.cells[r][*k].cost(m).is_some();
                // the next smaller candidate this layer could have had, and the next larger, better one
                let below = (0..sens.candidates.len())
                    .filter(usable)
                    .filter(|&k| sens.cells[r][k].bits < cell.bits)
                    .max_by_key(|&k| sens.cells[r][k].bits);
                let above = (0..sens.candidates.len())
                    .filter(usable)
                    .filter(|&k| {
                        let o = &sens.cells[r][k];
                        o.bits > cell.bits && o.cost(m) < cell.cost(m)
                    })
                    .min_by_key(|&k| sens.cells[r][k].bits);
                let per_weight = |a: u64, b: u64| a.abs_diff(b) as f64 / layer.numel.max(1) as f64;
                let mut parts = vec![match below {
                    Some(k) => {
                        let o = &sens.cells[r][k];
                        format!(
                            "{} would cost {} here, to save {:.2} bits per weight",
                            super::short_spec(&o.spec),
                            delta(cell, o),
                            per_weight(cell.bits, o.bits)
                        )
                    }
                    None => format!("the smallest candidate, at {} here", shown(cell)),
                }];
                if let Some(k) = above {
                    let o = &sens.cells[r][k];
                    parts.push(format!(
                        "{} would gain {} for {:.2} more bits per weight, which the budget buys more with elsewhere",
                        super::short_spec(&o.spec),
                        delta(cell, o),
                        per_weight(cell.bits, o.bits)
                    ));
                }
                format!(
                    "{}: {}; {rank}",
                    super::short_spec(&cell.spec),
                    parts.join("; ")
                )
            };
            out.push(LayerChoice {
                name: layer.name.clone(),
                spec: cell.spec.clone(),
                bits: cell.bits,
                bits_per_weight: cell.bits_per_weight,
                cost: cell.cost(m).unwrap_or(f64::NAN),
                pinned,
                excluded: false,
                why,
            });
        }
        out
    }

    /// The plan of a solution: every searched layer named with its spec and reason, excluded layers kept,
    /// everything else (biases, norms) kept by default.
    pub fn plan(&self, sens: &Sensitivity, s: &Solution, budget: Budget) -> (Plan, SummaryFile) {
        let mut plan = Plan {
            default: Choice::Keep,
            budget_bits: Some(match budget {
                Budget::BitsPerWeight(b) => b,
                Budget::Bytes(n) => n as f64 * 8.0 / self.numel.max(1) as f64,
            }),
            ..Default::default()
        };
        for lc in self.explain(sens, s) {
            let choice = if lc.excluded {
                Choice::Keep
            } else {
                Choice::parse(&lc.spec).expect("cells hold resolved specs")
            };
            plan.overrides.insert(lc.name, (choice, lc.why));
        }
        let summary = SummaryFile {
            bits_per_weight: self.bits_per_weight(s),
            bytes: s.bits.div_ceil(8),
        };
        (plan, summary)
    }
}

fn ordinal(k: usize) -> String {
    let suffix = match (k % 10, k % 100) {
        (1, x) if x != 11 => "st",
        (2, x) if x != 12 => "nd",
        (3, x) if x != 13 => "rd",
        _ => "th",
    };
    format!("{k}{suffix}")
}

/// Three significant digits: KL values span many decades.
fn fmt_kl(x: f64) -> String {
    if x == 0.0 || (1e-3..1e3).contains(&x.abs()) {
        format!("{x:.4}")
    } else {
        format!("{x:.2e}")
    }
}

fn fmt_db(x: f64) -> String {
    if x.is_infinite() {
        "exact".into()
    } else {
        format!("{x:.1} dB")
    }
}

fn fmt_db_delta(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.1} dB")
    } else {
        "all".into()
    }
}

#[cfg(test)]
mod tests {
    use super::super::sensitivity::{Cell, LayerRow};
    use super::*;

    fn cell(spec: &str, bits: u64, nsr: f64) -> Cell {
        Cell {
            spec: spec.into(),
            bits,
            bits_per_weight: bits as f64 / 100.0,
            weight_nsr: nsr,
            weight_mse: nsr,
            output_nsr: None,
            importance_nsr: None,
            end_to_end: None,
            error: None,
        }
    }

    fn table() -> Sensitivity {
        let layer = |name: &str| LayerRow {
            name: name.into(),
            shape: vec![10, 10],
            numel: 100,
            original_bits: 3200,
        };
        Sensitivity {
            model: "m".into(),
            layers: vec![layer("a"), layer("b"), layer("c")],
            candidates: vec!["int8".into(), "int4".into()],
            cells: vec![
                vec![cell("int8", 800, 1e-5), cell("int4", 400, 1e-2)],
                vec![cell("int8", 800, 1e-5), cell("int4", 400, 1e-3)],
                vec![
                    cell("int8", 800, 1e-5),
                    cell("int4", 400, 1e-4),
                    cell("int2", 200, 0.5),
                ],
            ],
            baseline: None,
            data: None,
        }
    }

    #[test]
    fn the_most_sensitive_layer_keeps_8_bits_and_says_why() {
        let s = table();
        let m = Mixed::new(&s, Measure::WeightSqnr, &Constraints::default()).unwrap();
        // 16 bits per weight in all for 3 layers: one layer can keep int8
        let sol = m.solve(Budget::BitsPerWeight(16.0 / 3.0)).unwrap();
        let ex = m.explain(&s, &sol);
        assert_eq!(ex[0].spec, "int8", "{ex:?}");
        assert_eq!((ex[1].spec.as_str(), ex[2].spec.as_str()), ("int4", "int4"));
        assert!(
            ex[0].why.contains("int4 would cost 30.0 dB of SQNR"),
            "{}",
            ex[0].why
        );
        assert!(
            ex[0].why.contains("the most sensitive of 3 layers"),
            "{}",
            ex[0].why
        );
        assert!(
            ex[2].why.contains("the smallest candidate"),
            "{}",
            ex[2].why
        );
        assert!(ex[2].why.contains("the least sensitive"), "{}", ex[2].why);
        let (plan, summary) = m.plan(&s, &sol, Budget::BitsPerWeight(16.0 / 3.0));
        assert_eq!(plan.default, Choice::Keep);
        assert_eq!(summary.bytes, 200);
        assert!(plan.overrides["a"].1.contains("most sensitive"));
    }

    #[test]
    fn pinned_and_excluded_layers() {
        let s = table();
        let mut c = Constraints::default();
        c.pinned.insert(2, 2); // c -> int2, not a candidate: pinned specs come as extra cells
        c.excluded.insert(1);
        let m = Mixed::new(&s, Measure::WeightSqnr, &c).unwrap();
        assert_eq!(m.numel, 200);
        let sol = m.solve(Budget::BitsPerWeight(5.0)).unwrap(); // 1000 bits: a int8 + c int2
        let ex = m.explain(&s, &sol);
        assert_eq!(ex[0].spec, "int8");
        assert!(ex[1].excluded && ex[1].spec == "none");
        assert_eq!(ex[2].spec, "int2");
        assert!(ex[2].pinned && ex[2].why.contains("pinned"));
        // nothing fits below the pinned layers' own size
        assert!(m.solve(Budget::Bytes(10)).is_none());
        // the end-to-end measure is not there for this table
        assert!(Mixed::new(&s, Measure::EndToEnd, &Constraints::default()).is_err());
    }
}
