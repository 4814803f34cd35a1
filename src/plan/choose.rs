//! From a sensitivity table to a plan: which layers the search may change (pinned and excluded layers
//! stay out of its hands), the budget, the solvers of [`super::search`], and a reason for every choice.

use super::runtime::{fused_groups, is_embedding, vllm_scheme, vllm_tieable, Runtime};
use super::search::{
    improve, lagrange_bound, pareto, Dp, GreedyPath, Item, Opt, Problem, Solution,
};
use super::sensitivity::{Measure, Sensitivity};
use super::{Choice, Plan, PlanError, SummaryFile};
use crate::quant::Spec;
use std::collections::{BTreeMap, BTreeSet};

/// How large the searched layers may be.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Budget {
    /// Average stored bits per weight over the searched layers (scales and codebooks included).
    BitsPerWeight(f64),
    /// Total stored bytes of the searched layers.
    Bytes(u64),
}

/// What the user fixed by hand, and which layers must share one spec.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Constraints {
    /// Row → cell index: the layer keeps this spec whatever the budget (it still counts in the budget).
    pub pinned: BTreeMap<usize, usize>,
    /// Rows kept as they are (not quantized, not counted in the budget).
    pub excluded: BTreeSet<usize>,
    /// Rows a runtime fuses into one layer (a name and its rows): the search gives them one spec, sized
    /// and costed as the group. Excluding or pinning one member does so for the whole group.
    pub ties: Vec<(String, Vec<usize>)>,
    /// Candidate specs a tied group may not take (the runtime cannot share them across a fused layer).
    pub untied_only: BTreeSet<String>,
    /// Candidate specs no layer may take (the runtime cannot load them).
    pub forbidden: BTreeSet<String>,
}

impl Constraints {
    /// What `runtime` requires of a search over `sens`: vLLM ties its fused layers (and a tied group may
    /// not take a spec it cannot share, NVFP4) and keeps embedding tables; other runtimes add nothing.
    pub fn for_runtime(sens: &Sensitivity, runtime: Runtime) -> Constraints {
        let mut c = Constraints::default();
        if runtime != Runtime::Vllm {
            return c;
        }
        let index: BTreeMap<&str, usize> = sens
            .layers
            .iter()
            .enumerate()
            .map(|(r, l)| (l.name.as_str(), r))
            .collect();
        for g in fused_groups(sens.layers.iter().map(|l| l.name.as_str())) {
            let rows = g
                .members
                .iter()
                .filter_map(|n| index.get(n.as_str()).copied())
                .collect();
            c.ties.push((g.describe(), rows));
        }
        let specs = || {
            sens.candidates
                .iter()
                .filter_map(|t| Some((t, Spec::parse(t).ok()?)))
        };
        c.untied_only = specs()
            .filter(|(_, s)| !vllm_tieable(s))
            .map(|(t, _)| t.clone())
            .collect();
        c.forbidden = specs()
            .filter(|(_, s)| vllm_scheme(s).is_err())
            .map(|(t, _)| t.clone())
            .collect();
        c.excluded = sens
            .layers
            .iter()
            .enumerate()
            .filter(|(_, l)| is_embedding(&l.name))
            .map(|(r, _)| r)
            .collect();
        c
    }
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
    /// The fused group the layer belongs to, if tied.
    pub group: Option<String>,
    pub why: String,
}

/// The search problem of one sensitivity table under one measure and one set of constraints, solved for
/// every budget at once.
pub struct Mixed {
    pub measure: Measure,
    pub problem: Problem,
    /// Item → the rows of the sensitivity table it sets (one, or a tied group's).
    pub rows: Vec<Vec<usize>>,
    /// Item → option → the cell of each of its rows.
    pub cells: Vec<Vec<Vec<usize>>>,
    /// None on models of too many layers for the table (see [`Dp::new`]).
    pub dp: Option<Dp>,
    /// Greedy's descent, which answers every budget.
    pub greedy_path: GreedyPath,
    /// Weights in the searched layers.
    pub numel: u64,
    /// Rows kept as they are: excluded ones and the rest of their groups.
    pub excluded: BTreeSet<usize>,
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
        // the units the search chooses for: tied groups, then every other row on its own, in row order
        let mut group_of: BTreeMap<usize, usize> = BTreeMap::new();
        for (k, (_, rows)) in constraints.ties.iter().enumerate() {
            for &r in rows {
                if r < sens.layers.len() {
                    group_of.insert(r, k);
                }
            }
        }
        let mut units: Vec<(Option<String>, Vec<usize>)> = Vec::new();
        let mut seen = BTreeSet::new();
        for r in 0..sens.layers.len() {
            match group_of.get(&r) {
                Some(&k) if seen.insert(k) => {
                    let (name, rows) = &constraints.ties[k];
                    let rows: Vec<usize> = rows
                        .iter()
                        .copied()
                        .filter(|&r| r < sens.layers.len())
                        .collect();
                    units.push((Some(name.clone()), rows));
                }
                Some(_) => {}
                None => units.push((None, vec![r])),
            }
        }
        let mut problem = Problem::default();
        let (mut rows, mut cells, mut numel) = (Vec::new(), Vec::new(), 0u64);
        let mut excluded = BTreeSet::new();
        for (group, unit) in units {
            let label = || match &group {
                Some(g) => format!("{g} (tied)"),
                None => sens.layers[unit[0]].name.clone(),
            };
            if unit.iter().any(|r| constraints.excluded.contains(r)) {
                excluded.extend(unit.iter().copied());
                continue;
            }
            // a pin on any member pins the group; members pinned to different specs contradict
            let pins: BTreeSet<&str> = unit
                .iter()
                .filter_map(|r| {
                    constraints
                        .pinned
                        .get(r)
                        .and_then(|&c| sens.cells[*r].get(c))
                        .map(|cell| cell.spec.as_str())
                })
                .collect();
            if unit.iter().any(|r| {
                constraints
                    .pinned
                    .get(r)
                    .is_some_and(|&c| sens.cells[*r].get(c).is_none())
            }) {
                return Err(PlanError::Invalid(format!(
                    "{}: no such spec to pin",
                    label()
                )));
            }
            if pins.len() > 1 {
                return Err(PlanError::Invalid(format!(
                    "{}: its members are pinned to different specs ({}), but they must share one",
                    label(),
                    pins.iter().copied().collect::<Vec<_>>().join(", ")
                )));
            }
            // option → the cell of each member
            let options: Vec<Vec<usize>> = match pins.iter().next() {
                Some(spec) if constraints.forbidden.contains(*spec) => {
                    return Err(PlanError::Invalid(format!(
                        "{}: the runtime cannot load {spec}",
                        label()
                    )));
                }
                Some(spec) if group.is_some() && constraints.untied_only.contains(*spec) => {
                    return Err(PlanError::Invalid(format!(
                        "{}: {spec} cannot be shared across a fused layer by the runtime",
                        label()
                    )));
                }
                Some(spec) => {
                    let per: Option<Vec<usize>> =
                        unit.iter().map(|&r| sens.find(r, spec)).collect();
                    let per = per.ok_or_else(|| {
                        PlanError::Invalid(format!(
                            "{}: {spec} was not measured on every member",
                            label()
                        ))
                    })?;
                    if let Some(bad) = per
                        .iter()
                        .zip(&unit)
                        .find(|(&c, &r)| sens.cells[r][c].cost(measure).is_none())
                    {
                        let cell = &sens.cells[*bad.1][*bad.0];
                        return Err(PlanError::Invalid(format!(
                            "{}: cannot pin {}: {}",
                            sens.layers[*bad.1].name,
                            cell.spec,
                            cell.error.as_deref().unwrap_or("no measurement")
                        )));
                    }
                    vec![per]
                }
                None => (0..sens.candidates.len())
                    .filter(|&c| {
                        unit.iter()
                            .all(|&r| sens.cells[r][c].cost(measure).is_some())
                    })
                    .filter(|&c| !constraints.forbidden.contains(&sens.candidates[c]))
                    .filter(|&c| {
                        group.is_none() || !constraints.untied_only.contains(&sens.candidates[c])
                    })
                    .map(|c| vec![c; unit.len()])
                    .collect(),
            };
            if options.is_empty() {
                return Err(PlanError::Invalid(format!(
                    "{}: no candidate quantizes {} ({})",
                    label(),
                    if unit.len() > 1 {
                        "every member"
                    } else {
                        "this layer"
                    },
                    unit.iter()
                        .flat_map(|&r| sens.cells[r].iter())
                        .filter_map(|c| c.error.clone())
                        .next()
                        .unwrap_or_default()
                )));
            }
            problem.items.push(Item {
                name: label(),
                options: options
                    .iter()
                    .map(|per| {
                        let members = unit.iter().zip(per).map(|(&r, &c)| &sens.cells[r][c]);
                        Opt {
                            label: sens.cells[unit[0]][per[0]].spec.clone(),
                            bits: members.clone().map(|cell| cell.bits).sum(),
                            cost: members
                                .map(|cell| cell.cost(measure).expect("filtered"))
                                .sum(),
                        }
                    })
                    .collect(),
            });
            numel += unit.iter().map(|&r| sens.layers[r].numel).sum::<u64>();
            rows.push(unit);
            cells.push(options);
        }
        if problem.items.is_empty() {
            return Err(PlanError::Invalid(
                "every layer is excluded: nothing to search".into(),
            ));
        }
        let dp = Dp::new(&problem);
        let greedy_path = GreedyPath::new(&problem).expect("every option's cost is finite");
        Ok(Mixed {
            measure,
            problem,
            rows,
            cells,
            dp,
            greedy_path,
            numel,
            excluded,
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
        let dp = self.dp.as_ref().and_then(|d| d.solve(bits));
        if self.exact() {
            return dp;
        }
        [dp, self.greedy_path.solution(&self.problem, bits)]
            .into_iter()
            .flatten()
            .map(|s| improve(&self.problem, &s, bits))
            .min_by(|a, b| a.cost.total_cmp(&b.cost))
    }

    pub fn greedy(&self, b: Budget) -> Option<Solution> {
        self.greedy_path
            .solution(&self.problem, self.budget_bits(b))
    }

    /// A cost no plan within the budget can beat: the better of the DP's rounded-down relaxation and
    /// the Lagrangian bound (None: nothing fits). The optimum itself when the DP is exact.
    pub fn lower_bound(&self, b: Budget) -> Option<f64> {
        let bits = self.budget_bits(b);
        let dp = self.dp.as_ref().and_then(|d| d.lower_bound(bits));
        if self.exact() {
            return dp;
        }
        [dp, lagrange_bound(&self.problem, bits)]
            .into_iter()
            .flatten()
            .reduce(f64::max)
    }

    /// The trade-off curve of size against summed cost as (bits, cost), smallest first: the DP's
    /// optima when its table is exact, otherwise the best of its plans and greedy's at each size.
    pub fn front(&self) -> Vec<(u64, f64)> {
        match &self.dp {
            Some(d) if d.exact => d.front(),
            dp => pareto(
                dp.iter()
                    .flat_map(|d| d.front())
                    .chain(self.greedy_path.points().iter().copied()),
            ),
        }
    }

    /// True when the plans are proven optima (the DP's table needs no rounding).
    pub fn exact(&self) -> bool {
        self.dp.as_ref().is_some_and(|d| d.exact)
    }

    /// The cell chosen for every row of the table (None: excluded).
    pub fn chosen_cells(&self, sens: &Sensitivity, s: &Solution) -> Vec<Option<usize>> {
        let mut out = vec![None; sens.layers.len()];
        for (i, &j) in s.choice.iter().enumerate() {
            for (&r, &c) in self.rows[i].iter().zip(&self.cells[i][j]) {
                out[r] = Some(c);
            }
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
            .filter(|r| !self.excluded.contains(r))
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
                Measure::ProbedKl => {
                    format!("probed KL {}", fmt_kl(cell.probed_kl.unwrap_or(f64::NAN)))
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
                        fmt_db_delta((x - y).abs()),
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
                        fmt_db_delta((x - y).abs()),
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
                Measure::ProbedKl => format!(
                    "probed KL {} -> {}",
                    fmt_kl(a.probed_kl.unwrap_or(f64::NAN)),
                    fmt_kl(b.probed_kl.unwrap_or(f64::NAN))
                ),
            }
        };
        // row → (item, tied group name)
        let mut item_of: Vec<Option<usize>> = vec![None; sens.layers.len()];
        for (i, rows) in self.rows.iter().enumerate() {
            for &r in rows {
                item_of[r] = Some(i);
            }
        }
        let group_of = |r: usize| -> Option<String> {
            self.constraints
                .ties
                .iter()
                .find(|(_, rows)| rows.contains(&r))
                .map(|(g, _)| g.clone())
        };
        let mut out = Vec::new();
        for (r, layer) in sens.layers.iter().enumerate() {
            let group = group_of(r);
            let Some(c) = chosen[r] else {
                let why = match (&group, self.constraints.excluded.contains(&r)) {
                    (Some(g), false) => format!(
                        "kept as it is with the rest of {g}, which share one spec and one of which is excluded"
                    ),
                    _ => "excluded from the search: kept as it is".into(),
                };
                out.push(LayerChoice {
                    name: layer.name.clone(),
                    spec: "none".into(),
                    bits: layer.original_bits,
                    bits_per_weight: layer.original_bits as f64 / layer.numel.max(1) as f64,
                    cost: 0.0,
                    pinned: false,
                    excluded: true,
                    group,
                    why,
                });
                continue;
            };
            let cell = &sens.cells[r][c];
            let item = item_of[r].expect("a chosen row belongs to an item");
            let pinned = self.rows[item]
                .iter()
                .any(|r| self.constraints.pinned.contains_key(r));
            let rank = rank_text(r);
            let why = if let (Some(g), false) = (&group, pinned) {
                // a tied group: the choice was made for the group, on its summed size and cost
                let it = &self.problem.items[item];
                let j = s.choice[item];
                let (o, n) = (
                    &it.options[j],
                    self.rows[item]
                        .iter()
                        .map(|&r| sens.layers[r].numel)
                        .sum::<u64>(),
                );
                let per_weight = |a: u64, b: u64| a.abs_diff(b) as f64 / n.max(1) as f64;
                let below = it
                    .options
                    .iter()
                    .filter(|x| x.bits < o.bits)
                    .max_by_key(|x| x.bits);
                let above = it
                    .options
                    .iter()
                    .filter(|x| x.bits > o.bits && x.cost < o.cost)
                    .min_by_key(|x| x.bits);
                let mut parts = vec![format!(
                    "one spec for {g}, which the runtime runs as one layer"
                )];
                parts.push(match below {
                    Some(x) => format!(
                        "{} would raise the group's summed {} cost {} -> {}, to save {:.2} bits per weight",
                        super::short_spec(&x.label),
                        m.name(),
                        fmt_kl(o.cost),
                        fmt_kl(x.cost),
                        per_weight(o.bits, x.bits)
                    ),
                    None => format!("the smallest candidate, at a summed {} cost of {}", m.name(), fmt_kl(o.cost)),
                });
                if let Some(x) = above {
                    parts.push(format!(
                        "{} would lower it to {} for {:.2} more bits per weight, which the budget buys more with elsewhere",
                        super::short_spec(&x.label),
                        fmt_kl(x.cost),
                        per_weight(o.bits, x.bits)
                    ));
                }
                format!(
                    "{}: {}; this layer is {rank}",
                    super::short_spec(&cell.spec),
                    parts.join("; ")
                )
            } else if pinned {
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
                group,
                why,
            });
        }
        out
    }

    /// Each candidate on every searched layer (pinned layers keep their pin, excluded ones stay out):
    /// the uniform plans a searched plan is judged against, with their bits per weight.
    pub fn uniform_plans(&self, sens: &Sensitivity) -> Vec<(String, f64, Plan)> {
        sens.candidates
            .iter()
            .enumerate()
            .filter_map(|(i, spec)| {
                let mut p = Plan {
                    default: Choice::Keep,
                    ..Default::default()
                };
                let mut bits = 0u64;
                for (r, l) in sens.layers.iter().enumerate() {
                    if self.excluded.contains(&r) {
                        continue;
                    }
                    let cell = match self.constraints.pinned.get(&r) {
                        Some(&k) => &sens.cells[r][k],
                        None => &sens.cells[r][i],
                    };
                    bits += cell.bits;
                    p.overrides.insert(
                        l.name.clone(),
                        (Choice::parse(&cell.spec).ok()?, String::new()),
                    );
                }
                Some((spec.clone(), bits as f64 / self.numel.max(1) as f64, p))
            })
            .collect()
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
            probed_kl: None,
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

    #[test]
    fn tied_layers_share_one_spec() {
        let s = table();
        let c = Constraints {
            ties: vec![("ab".into(), vec![0, 1])],
            ..Default::default()
        };
        let m = Mixed::new(&s, Measure::WeightSqnr, &c).unwrap();
        assert_eq!(m.problem.items.len(), 2);
        assert_eq!(m.problem.items[0].options[0].bits, 1600, "the group's size");
        // 1600 bits: untied, a would keep int8; tied, a and b both go to int4 and c keeps int8
        let sol = m.solve(Budget::BitsPerWeight(16.0 / 3.0)).unwrap();
        let ex = m.explain(&s, &sol);
        let specs: Vec<&str> = ex.iter().map(|e| e.spec.as_str()).collect();
        assert_eq!(specs, ["int4", "int4", "int8"]);
        assert_eq!(ex[0].group.as_deref(), Some("ab"));
        assert!(ex[1].why.contains("one spec for ab"), "{}", ex[1].why);
        // excluding one member keeps the group; pinning members apart is refused
        let mut c2 = c.clone();
        c2.excluded.insert(1);
        let m = Mixed::new(&s, Measure::WeightSqnr, &c2).unwrap();
        let ex = m.explain(&s, &m.solve(Budget::BitsPerWeight(8.0)).unwrap());
        assert!(ex[0].excluded && ex[1].excluded && !ex[2].excluded);
        assert!(ex[0].why.contains("with the rest of ab"), "{}", ex[0].why);
        let mut c3 = c.clone();
        c3.pinned.insert(0, 0);
        c3.pinned.insert(1, 1);
        let err = Mixed::new(&s, Measure::WeightSqnr, &c3).err().unwrap();
        assert!(err.to_string().contains("different specs"), "{err}");
        // a spec the runtime cannot load is never chosen, and cannot be pinned
        let c4 = Constraints {
            forbidden: ["int8".to_string()].into(),
            ..Default::default()
        };
        let m = Mixed::new(&s, Measure::WeightSqnr, &c4).unwrap();
        let ex = m.explain(&s, &m.solve(Budget::BitsPerWeight(8.0)).unwrap());
        assert!(ex.iter().all(|e| e.spec == "int4"), "{ex:?}");
        let mut c5 = c4.clone();
        c5.pinned.insert(0, 0);
        assert!(Mixed::new(&s, Measure::WeightSqnr, &c5).is_err());
    }
}
