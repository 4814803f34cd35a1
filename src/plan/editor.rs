//! Editing a plan by hand, with undo: what the window's workbench changes when a person sets the
//! default, overrides a layer or a pattern's layers, or loads a plan. No window is needed to use or
//! test it.

use super::runtime::{FusedGroup, Runtime};
use super::{Choice, Plan};
use crate::model::Model;
use std::collections::BTreeMap;

/// The tensors a person edits, in natural name order: the quantizable weights (float, two or more
/// dimensions). Plans can still name other tensors.
pub fn editable(model: &Model) -> Vec<usize> {
    let mut v: Vec<usize> = (0..model.tensors.len())
        .filter(|&i| model.tensors[i].quantizable())
        .collect();
    v.sort_by(|&a, &b| crate::model::natural_cmp(&model.tensors[a].name, &model.tensors[b].name));
    v
}

/// The names of the [`editable`] tensors whose name matches `pattern` (a regular expression, found
/// anywhere in the name) or whose layer role is `pattern` (linear, conv, embedding, lm_head).
pub fn matching(model: &Model, pattern: &str) -> Result<Vec<String>, String> {
    let layers = crate::model::group_layers(&model.tensors);
    let role_of = |t: usize| {
        layers
            .iter()
            .find(|l| l.weight == Some(t))
            .map(|l| l.role.as_str())
    };
    let re = regex::Regex::new(pattern)
        .map_err(|e| format!("'{pattern}' is not a valid regular expression: {e}"))?;
    let names: Vec<String> = editable(model)
        .into_iter()
        .filter(|&t| role_of(t) == Some(pattern) || re.is_match(&model.tensors[t].name))
        .map(|t| model.tensors[t].name.clone())
        .collect();
    if names.is_empty() {
        return Err(format!("no quantizable tensor matches '{pattern}'"));
    }
    Ok(names)
}

/// What an undo step restores: the parts of a plan a person edits.
#[derive(Debug, Clone, PartialEq)]
struct Snapshot {
    default: Choice,
    overrides: BTreeMap<String, (Choice, String)>,
    target: Runtime,
}

/// A plan and its undo / redo history. Every edit is one undo step. When the plan's target runtime
/// fuses layers ([`Runtime::ties`]), an edit of one member of a fused group is an edit of all of them.
#[derive(Debug, Clone, Default)]
pub struct PlanEditor {
    plan: Plan,
    undo: Vec<Snapshot>,
    redo: Vec<Snapshot>,
    /// The model's fused groups ([`super::runtime::fused_groups`]).
    groups: Vec<FusedGroup>,
}

impl PlanEditor {
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn can_undo(&self) -> bool {
        !self.undo.is_empty()
    }

    pub fn can_redo(&self) -> bool {
        !self.redo.is_empty()
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            default: self.plan.default.clone(),
            overrides: self.plan.overrides.clone(),
            target: self.plan.target,
        }
    }

    fn restore(&mut self, s: Snapshot) {
        self.plan.default = s.default;
        self.plan.overrides = s.overrides;
        self.plan.target = s.target;
    }

    /// The model's fused groups, for tied edits.
    pub fn set_groups(&mut self, groups: Vec<FusedGroup>) {
        self.groups = groups;
    }

    /// The fused group `name` is edited with, when the plan's target ties groups.
    pub fn tied_group(&self, name: &str) -> Option<&FusedGroup> {
        if !self.plan.target.ties() {
            return None;
        }
        self.groups
            .iter()
            .find(|g| g.members.iter().any(|m| m == name))
    }

    /// `names` with the rest of their tied groups, in order, without repeats.
    fn with_tied(&self, names: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for n in names {
            let members = match self.tied_group(n) {
                Some(g) => g.members.clone(),
                None => vec![n.clone()],
            };
            for m in members {
                if !out.contains(&m) {
                    out.push(m);
                }
            }
        }
        out
    }

    /// Set the runtime the plan is for (one undo step).
    pub fn set_target(&mut self, target: Runtime) {
        if target != self.plan.target {
            self.checkpoint();
            self.plan.target = target;
        }
    }

    /// Record the current plan for undo before an edit.
    fn checkpoint(&mut self) {
        self.undo.push(self.snapshot());
        self.redo.clear();
    }

    pub fn undo(&mut self) -> bool {
        match self.undo.pop() {
            Some(s) => {
                self.redo.push(self.snapshot());
                self.restore(s);
                true
            }
            None => false,
        }
    }

    pub fn redo(&mut self) -> bool {
        match self.redo.pop() {
            Some(s) => {
                self.undo.push(self.snapshot());
                self.restore(s);
                true
            }
            None => false,
        }
    }

    /// Set the model-wide default from text; a bad spec leaves the plan as it was and says why. Setting
    /// the default it already has is no edit.
    pub fn set_default(&mut self, text: &str) -> Result<(), String> {
        let c = Choice::parse(text)?;
        if c != self.plan.default {
            self.checkpoint();
            self.plan.default = c;
        }
        Ok(())
    }

    /// Override the tensors `names` (and the rest of their tied groups) with the spec `text`, giving
    /// `why` as the reason (one undo step). Returns how many tensors changed hands.
    pub fn set_names(&mut self, names: &[String], text: &str, why: &str) -> Result<usize, String> {
        let c = Choice::parse(text)?;
        if names.is_empty() {
            return Err("no rows picked (Ctrl+click rows in the table)".into());
        }
        let names = self.with_tied(names);
        self.checkpoint();
        for n in &names {
            self.plan
                .overrides
                .insert(n.clone(), (c.clone(), why.to_string()));
        }
        Ok(names.len())
    }

    /// Override every [`matching`] tensor of `model` with the spec `text` (one undo step). Returns
    /// how many tensors changed hands; a bad spec or pattern changes nothing.
    pub fn set_matching(
        &mut self,
        model: &Model,
        pattern: &str,
        text: &str,
    ) -> Result<usize, String> {
        Choice::parse(text)?;
        let names = matching(model, pattern)?;
        self.set_names(&names, text, &format!("bulk edit: {pattern}"))
    }

    /// Drop the override of `name` (and of the rest of its tied group), if it has one.
    pub fn clear_override(&mut self, name: &str) {
        let names = self.with_tied(&[name.to_string()]);
        if names.iter().any(|n| self.plan.overrides.contains_key(n)) {
            self.checkpoint();
            for n in &names {
                self.plan.overrides.remove(n);
            }
        }
    }

    /// Replace the whole plan (a loaded file, a searched plan) as one undo step.
    pub fn replace(&mut self, plan: Plan) {
        self.checkpoint();
        self.plan = plan;
    }

    /// Start over from `plan` with no history (another model, a plan restored from the last session).
    pub fn reset(&mut self, plan: Plan) {
        self.plan = plan;
        self.undo.clear();
        self.redo.clear();
    }

    /// Forget the history, keeping the plan.
    pub fn clear_history(&mut self) {
        self.undo.clear();
        self.redo.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_undo_and_redo_one_step_at_a_time() {
        let mut e = PlanEditor::default();
        let int4 = Choice::parse("int4").unwrap();
        e.set_default("int4").unwrap();
        assert_eq!(e.plan().default, int4);
        // the same default again is no edit; a bad spec changes nothing
        e.set_default("int4").unwrap();
        assert!(e.set_default("int9").is_err());
        let names = ["a".to_string(), "b".to_string()];
        assert_eq!(e.set_names(&names, "int4:g16", "picked").unwrap(), 2);
        assert!(e.set_names(&[], "int4", "picked").is_err());
        assert_eq!(e.plan().overrides.len(), 2);
        assert_eq!(e.plan().overrides["a"].1, "picked");

        assert!(e.undo());
        assert!(e.plan().overrides.is_empty());
        assert_eq!(e.plan().default, int4);
        assert!(e.undo());
        assert_eq!(e.plan().default, Plan::default().default);
        assert!(!e.undo() && !e.can_undo());
        assert!(e.redo() && e.redo() && !e.can_redo());
        assert_eq!(e.plan().overrides.len(), 2);

        // replacing the plan is one step; an edit after an undo drops the redo history
        e.replace(Plan::default());
        assert!(e.plan().overrides.is_empty());
        assert!(e.undo());
        assert_eq!(e.plan().overrides.len(), 2);
        e.clear_override("a");
        assert!(!e.can_redo());
        assert_eq!(e.plan().overrides.len(), 1);
        e.reset(Plan::default());
        assert!(!e.can_undo() && !e.can_redo());
    }

    #[test]
    fn bulk_edits_match_names_or_roles() {
        let m = crate::nn::sample_mlp();
        assert_eq!(editable(&m).len(), 3);
        let mut e = PlanEditor::default();
        assert_eq!(e.set_matching(&m, "fc[23]", "int4:g32").unwrap(), 2);
        assert_eq!(e.plan().overrides["fc2.weight"].1, "bulk edit: fc[23]");
        assert!(!e.plan().overrides.contains_key("fc1.weight"));
        // a role, every weight, then bad input: nothing changes
        assert_eq!(e.set_matching(&m, "linear", "int8").unwrap(), 3);
        assert_eq!(e.set_matching(&m, ".*", "nf4").unwrap(), 3);
        let before = e.plan().fingerprint();
        assert!(e
            .set_matching(&m, "fc(", "int8")
            .unwrap_err()
            .contains("regular expression"));
        assert!(e
            .set_matching(&m, "nothing", "int8")
            .unwrap_err()
            .contains("no quantizable"));
        assert!(e.set_matching(&m, ".*", "int9").is_err());
        assert_eq!(e.plan().fingerprint(), before);
        // biases are never matched: only editable tensors
        assert!(matching(&m, "bias").is_err());
        assert!(e.undo() && e.undo() && e.undo() && !e.can_undo());
    }

    #[test]
    fn a_plan_for_vllm_edits_fused_layers_together() {
        let names: Vec<String> = ["q_proj", "k_proj", "v_proj", "o_proj"]
            .iter()
            .map(|p| format!("model.layers.0.self_attn.{p}.weight"))
            .collect();
        let mut e = PlanEditor::default();
        e.set_groups(super::super::runtime::fused_groups(
            names.iter().map(String::as_str),
        ));
        // no target: one layer at a time
        assert_eq!(e.set_names(&names[..1], "int8", "x").unwrap(), 1);
        e.set_target(Runtime::Vllm);
        assert!(e.tied_group(&names[1]).is_some());
        assert!(e.tied_group(&names[3]).is_none());
        assert_eq!(e.set_names(&names[1..2], "int4", "x").unwrap(), 3);
        for n in &names[..3] {
            assert_eq!(e.plan().overrides[n].0, Choice::parse("int4").unwrap());
        }
        e.clear_override(&names[2]);
        assert!(e.plan().overrides.is_empty());
        // the target is part of the undo history
        assert!(e.undo() && e.undo());
        assert_eq!(e.plan().target, Runtime::Vllm);
        assert!(e.undo());
        assert_eq!(e.plan().target, Runtime::None);
    }
}
