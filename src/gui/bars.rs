//! A histogram as the bars egui_plot draws, the same way in every panel.

use crate::stats::Histogram;
use egui_plot::Bar;

/// The height shown for a count: the count, or with `log` its log10 plus one (so a single value
/// still shows; an empty bin is 0).
pub(crate) fn count_height(c: u64, log: bool) -> f64 {
    match (log, c) {
        (false, _) => c as f64,
        (true, 0) => 0.0,
        (true, _) => (c as f64).log10() + 1.0,
    }
}

/// One bar per bin of `h`, at the bin's centre, `share` of the bin wide.
pub(crate) fn histogram_bars(h: &Histogram, log: bool, share: f64) -> Vec<Bar> {
    let w = h.bin_width() * share;
    h.counts
        .iter()
        .enumerate()
        .map(|(i, &c)| Bar::new(h.center(i), count_height(c, log)).width(w))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heights_and_widths() {
        assert_eq!([0, 1, 100].map(|c| count_height(c, true)), [0.0, 1.0, 3.0]);
        assert_eq!(count_height(5, false), 5.0);
        let h = crate::stats::histogram(&[0.0, 0.1, 0.1, 1.0], 4, Some((0.0, 1.0)));
        let b = histogram_bars(&h, false, 0.5);
        assert_eq!(b.len(), 4);
        assert_eq!(
            (b[0].argument, b[0].value, b[0].bar_width),
            (0.125, 3.0, 0.125)
        );
        assert_eq!(b[3].value, 1.0);
    }
}
