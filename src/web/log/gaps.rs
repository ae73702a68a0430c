//! Audit gaps among the log's rows: a page in time order shows each recorded
//! gap its stretch of the log holds as a row of its own ([`Line::Gap`]),
//! where the missing changes would have been; any reader sees it, since it
//! says what the entries around it cannot (`web::health`).
//!
//! A gap lies just before its first event in id order
//! (`store::gaps::Gap::anchor`), and the log in time order is id order. Which
//! page shows it: each page holds the ids between the cursor it was read
//! from and the cursor of its link onward ([`Covered`]), so following the
//! links shows every gap once, including one that falls between the last
//! row of a page and the first of the next. Beyond that the gap must overlap
//! the time filter.

use super::rows::RowView;
use crate::web::health::GapView;
use crate::web::query::Dir;

/// A line of the log table.
#[derive(Debug, Clone)]
pub enum Line {
    /// Boxed: a row is several times the size of a gap.
    Entry(Box<RowView>),
    Gap(GapView),
}

/// The ids a page holds, for placing gaps: a gap anchored at `a` (just
/// before id `a`) is on the page when `a > above` and `a <= upto`; `None`
/// leaves that side open (no page beyond it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Covered {
    above: Option<i64>,
    upto: Option<i64>,
}

/// How a page was read and where its links go, as ids.
#[derive(Debug, Clone, Copy)]
pub struct PageIds {
    pub dir: Dir,
    /// The cursor the page was read from: its id, and whether it went backward.
    pub own: Option<(i64, bool)>,
    /// The ids of the cursors of its next and previous links.
    pub next: Option<i64>,
    pub prev: Option<i64>,
}

impl Covered {
    /// A page reached forward (or the first) holds from its own cursor to
    /// its next link's; one reached backward, from its own cursor to its
    /// previous link's. Newest first, the newer side is `upto`; oldest
    /// first, `above`.
    pub fn of(p: PageIds) -> Covered {
        let own = p.own.map(|(id, _)| id);
        let backward = p.own.is_some_and(|(_, b)| b);
        match (p.dir, backward) {
            (Dir::Desc, false) => Covered {
                above: p.next,
                upto: own,
            },
            (Dir::Desc, true) => Covered {
                above: own,
                upto: p.prev,
            },
            (Dir::Asc, false) => Covered {
                above: own,
                upto: p.next,
            },
            (Dir::Asc, true) => Covered {
                above: p.prev,
                upto: own,
            },
        }
    }

    pub fn holds(&self, anchor: i64) -> bool {
        self.above.is_none_or(|a| anchor > a) && self.upto.is_none_or(|u| anchor <= u)
    }
}

/// The rows with the gaps among them, in display order: newest first, a
/// gap goes before the first row older than it; oldest first, before the
/// first row at or after it.
pub fn lines(rows: Vec<RowView>, dir: Dir, mut gaps: Vec<GapView>) -> Vec<Line> {
    let desc = dir == Dir::Desc;
    gaps.sort_by_key(|g| if desc { -g.anchor } else { g.anchor });
    let mut gaps = gaps.into_iter().peekable();
    let mut out = Vec::with_capacity(rows.len() + gaps.len());
    for row in rows {
        while let Some(g) = gaps.next_if(|g| {
            if desc {
                row.id < g.anchor
            } else {
                row.id >= g.anchor
            }
        }) {
            out.push(Line::Gap(g));
        }
        out.push(Line::Entry(Box::new(row)));
    }
    out.extend(gaps.map(Line::Gap));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(dir: Dir, own: Option<(i64, bool)>, next: Option<i64>, prev: Option<i64>) -> Covered {
        Covered::of(PageIds {
            dir,
            own,
            next,
            prev,
        })
    }

    fn held(c: Covered) -> Vec<i64> {
        (0..=20).filter(|a| c.holds(*a)).collect()
    }

    #[test]
    fn pages_followed_forward_hold_every_anchor_once() {
        // Newest first, ids 20 down to 1, pages of five with links at 16 and 11 (… and 6).
        let first = ids(Dir::Desc, None, Some(16), None);
        let second = ids(Dir::Desc, Some((16, false)), Some(11), Some(15));
        let last = ids(Dir::Desc, Some((11, false)), None, Some(10));
        assert_eq!(held(first), (17..=20).collect::<Vec<_>>());
        assert_eq!(held(second), (12..=16).collect::<Vec<_>>());
        assert_eq!(held(last), (0..=11).collect::<Vec<_>>());
        // Oldest first, the mirror image.
        let first = ids(Dir::Asc, None, Some(5), None);
        let second = ids(Dir::Asc, Some((5, false)), None, Some(6));
        assert_eq!(held(first), (0..=5).collect::<Vec<_>>());
        assert_eq!(held(second), (6..=20).collect::<Vec<_>>());
    }

    #[test]
    fn pages_followed_backward_hold_every_anchor_once() {
        // Back from the newest-first page that started below 11: ids 11..15, prev link at 15.
        let back = ids(Dir::Desc, Some((10, true)), Some(11), Some(15));
        let top = ids(Dir::Desc, Some((15, true)), Some(16), None);
        assert_eq!(held(back), (11..=15).collect::<Vec<_>>());
        assert_eq!(held(top), (16..=20).collect::<Vec<_>>());
        let back_asc = ids(Dir::Asc, Some((10, true)), Some(9), None);
        assert_eq!(held(back_asc), (0..=10).collect::<Vec<_>>());
    }

    fn row(id: i64) -> RowView {
        RowView {
            id,
            time: String::new(),
            time_full: String::new(),
            actor: String::new(),
            role: String::new(),
            actor_is_role: false,
            actor_url: String::new(),
            ip: String::new(),
            ip_url: String::new(),
            action: String::new(),
            action_class: String::new(),
            action_url: String::new(),
            table: String::new(),
            table_url: String::new(),
            db: None,
            db_url: String::new(),
            pk: String::new(),
            history_url: None,
            changes: String::new(),
            entry_url: String::new(),
            matched: None,
        }
    }

    fn gap(anchor: i64) -> GapView {
        GapView {
            anchor,
            text: String::new(),
            events: vec![anchor],
            linked: false,
        }
    }

    fn order(lines: &[Line]) -> Vec<String> {
        lines
            .iter()
            .map(|l| match l {
                Line::Entry(r) => r.id.to_string(),
                Line::Gap(g) => format!("gap{}", g.anchor),
            })
            .collect()
    }

    #[test]
    fn gaps_go_where_their_changes_would_have_been() {
        let rows = || [9, 7, 4, 3].map(row).to_vec();
        let placed = lines(rows(), Dir::Desc, vec![gap(4), gap(8), gap(30), gap(1)]);
        assert_eq!(
            order(&placed),
            ["gap30", "9", "gap8", "7", "4", "gap4", "3", "gap1"]
        );
        let asc = [3, 4, 7, 9].map(row).to_vec();
        let placed = lines(asc, Dir::Asc, vec![gap(8), gap(4), gap(1)]);
        assert_eq!(order(&placed), ["gap1", "3", "gap4", "4", "7", "gap8", "9"]);
        assert_eq!(
            order(&lines(Vec::new(), Dir::Desc, vec![gap(2), gap(5)])),
            ["gap5", "gap2"]
        );
    }
}
