//! Editing a plan by hand, with undo: what the window's workbench changes when a person sets the
//! default, overrides a layer or loads a plan. No window is needed to use or test it.

use super::{Choice, Plan};
use std::collections::BTreeMap;

/// What an undo step restores: the parts of a plan a person edits.
#[derive(Debug, Clone, PartialEq)]
struct Snapshot {
    default: Choice,
    overrides: BTreeMap<String, (Choice, String)>,
}

/// A plan and its undo / redo history. Every edit is one undo step.
#[derive(Debug, Clone, Default)]
pub struct PlanEditor {
    plan: Plan,
    undo: Vec<Snapshot>,
    redo: Vec<Snapshot>,
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
        }
    }

    fn restore(&mut self, s: Snapshot) {
        self.plan.default = s.default;
        self.plan.overrides = s.overrides;
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

    /// Override the tensors `names` with the spec `text`, giving `why` as the reason (one undo step).
    pub fn set_names(&mut self, names: &[String], text: &str, why: &str) -> Result<usize, String> {
        let c = Choice::parse(text)?;
        if names.is_empty() {
            return Err("no rows picked (Ctrl+click rows in the table)".into());
        }
        self.checkpoint();
        for n in names {
            self.plan
                .overrides
                .insert(n.clone(), (c.clone(), why.to_string()));
        }
        Ok(names.len())
    }

    /// Drop the override of `name`, if it has one.
    pub fn clear_override(&mut self, name: &str) {
        if self.plan.overrides.contains_key(name) {
            self.checkpoint();
            self.plan.overrides.remove(name);
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
}
