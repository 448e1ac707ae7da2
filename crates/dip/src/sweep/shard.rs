//! Which cells one process takes.

use std::fmt;

use crate::{Error, Result};

/// Shard `index` of `count`: the cells at positions `index`, `index + count`, `index + 2·count`,
/// … of the plan's cell list. Every cell is in exactly one shard of a given count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// The whole plan.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    pub fn new(index: usize, count: usize) -> Result<Shard> {
        if count == 0 || index >= count {
            return Err(Error::invalid(format!(
                "shard {index}/{count}: expected I/N with 0 <= I < N, e.g. 0/4"
            )));
        }
        Ok(Shard { index, count })
    }

    /// Parses `I/N`, e.g. `0/4`.
    pub fn parse(text: &str) -> Result<Shard> {
        let parsed = text
            .split_once('/')
            .and_then(|(i, n)| Some((i.trim().parse().ok()?, n.trim().parse().ok()?)));
        match parsed {
            Some((i, n)) => Shard::new(i, n).map_err(|_| {
                Error::invalid(format!(
                    "--shard {text}: expected I/N with 0 <= I < N, e.g. 0/4"
                ))
            }),
            None => Err(Error::invalid(format!(
                "--shard {text}: expected I/N with 0 <= I < N, e.g. 0/4"
            ))),
        }
    }

    /// The shard of a Slurm array task, from `SLURM_ARRAY_TASK_ID` and
    /// `SLURM_ARRAY_TASK_COUNT`; `None` outside an array job.
    pub fn from_env() -> Result<Option<Shard>> {
        Shard::from_vars(|k| std::env::var(k).ok())
    }

    /// [`Shard::from_env`] with the variables read through `get`.
    ///
    /// The index is the task id less `SLURM_ARRAY_TASK_MIN` (0 when unset), so that `1-8`
    /// works as well as `0-7`. Where `SLURM_ARRAY_TASK_MAX` is set too, the array must be a
    /// range without gaps (max − min + 1 = count): with a list or a step, the tasks would not
    /// cover every cell, so that is an error rather than a silent gap.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Option<Shard>> {
        let Some(id_text) = get("SLURM_ARRAY_TASK_ID") else {
            return Ok(None);
        };
        let num = |name: &str, text: &str| -> Result<usize> {
            text.trim().parse().map_err(|_| {
                Error::invalid(format!(
                    "{name}={text} is not a task number; pass --shard I/N instead"
                ))
            })
        };
        let id = num("SLURM_ARRAY_TASK_ID", &id_text)?;
        let min = match get("SLURM_ARRAY_TASK_MIN") {
            Some(t) => num("SLURM_ARRAY_TASK_MIN", &t)?,
            None => 0,
        };
        let max = get("SLURM_ARRAY_TASK_MAX")
            .map(|t| num("SLURM_ARRAY_TASK_MAX", &t))
            .transpose()?;
        let count = match (get("SLURM_ARRAY_TASK_COUNT"), max) {
            (Some(t), _) => num("SLURM_ARRAY_TASK_COUNT", &t)?,
            (None, Some(max)) if max >= min => max - min + 1,
            _ => {
                return Err(Error::invalid(
                    "SLURM_ARRAY_TASK_ID is set but not SLURM_ARRAY_TASK_COUNT; pass --shard I/N",
                ));
            }
        };
        if let Some(max) = max
            && max.checked_sub(min).map(|d| d + 1) != Some(count)
        {
            return Err(Error::invalid(format!(
                "the Slurm array is not a range without gaps (tasks {min} to {max}, {count} \
                 of them): submit it as --array=0-{} (finished cells are skipped), or pass \
                 --shard I/N",
                count.max(1) - 1
            )));
        }
        if id < min || id - min >= count {
            return Err(Error::invalid(format!(
                "SLURM_ARRAY_TASK_ID {id} is outside the array of {count} task(s) starting at \
                 {min}; pass --shard I/N"
            )));
        }
        Shard::new(id - min, count).map(Some)
    }

    /// Whether the cell at `position` of the plan's list is in this shard.
    pub fn contains(&self, position: usize) -> bool {
        position % self.count == self.index
    }

    /// The positions and items of `items` in this shard.
    pub fn select<'a, T>(&self, items: &'a [T]) -> impl Iterator<Item = (usize, &'a T)> + 'a {
        let s = *self;
        items
            .iter()
            .enumerate()
            .filter(move |(k, _)| s.contains(*k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn every_cell_is_in_exactly_one_shard() {
        for cells in [0usize, 1, 7, 8, 100] {
            for count in 1..=9 {
                let mut hits = vec![0; cells];
                for index in 0..count {
                    let s = Shard::new(index, count).unwrap();
                    let items: Vec<usize> = (0..cells).collect();
                    for (k, &v) in s.select(&items) {
                        assert_eq!(k, v);
                        hits[k] += 1;
                    }
                }
                assert!(
                    hits.iter().all(|&h| h == 1),
                    "{cells} cells, {count} shards"
                );
            }
        }
        let s = Shard::parse(" 2 / 3 ").unwrap();
        assert_eq!((s.index, s.count), (2, 3));
        assert_eq!(s.to_string(), "2/3");
        let items = [10, 11, 12, 13, 14, 15, 16];
        let got: Vec<i32> = s.select(&items).map(|(_, v)| *v).collect();
        assert_eq!(got, vec![12, 15]);
        for bad in ["3/3", "1/0", "a/2", "1", "-1/2", ""] {
            let e = Shard::parse(bad).unwrap_err().to_string();
            assert!(e.contains("expected I/N"), "{bad}: {e}");
        }
    }

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn slurm_variables_give_the_shard() {
        assert_eq!(Shard::from_vars(vars(&[])).unwrap(), None);
        let s = Shard::from_vars(vars(&[
            ("SLURM_ARRAY_TASK_ID", "3"),
            ("SLURM_ARRAY_TASK_COUNT", "8"),
        ]))
        .unwrap();
        assert_eq!(s, Some(Shard { index: 3, count: 8 }));
        // What Slurm sets for --array=0-7.
        let s = Shard::from_vars(vars(&[
            ("SLURM_ARRAY_TASK_ID", "7"),
            ("SLURM_ARRAY_TASK_COUNT", "8"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_MAX", "7"),
        ]))
        .unwrap();
        assert_eq!(s, Some(Shard { index: 7, count: 8 }));
        // --array=1-8 counts from 1.
        let s = Shard::from_vars(vars(&[
            ("SLURM_ARRAY_TASK_ID", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "8"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_MAX", "8"),
        ]))
        .unwrap();
        assert_eq!(s, Some(Shard { index: 0, count: 8 }));
        // No count, but a range.
        let s = Shard::from_vars(vars(&[
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_MAX", "3"),
        ]))
        .unwrap();
        assert_eq!(s, Some(Shard { index: 2, count: 4 }));

        let err = |pairs: &[(&str, &str)]| Shard::from_vars(vars(pairs)).unwrap_err().to_string();
        // --array=3,5: two tasks that do not make a range.
        let e = err(&[
            ("SLURM_ARRAY_TASK_ID", "5"),
            ("SLURM_ARRAY_TASK_COUNT", "2"),
            ("SLURM_ARRAY_TASK_MIN", "3"),
            ("SLURM_ARRAY_TASK_MAX", "5"),
        ]);
        assert!(e.contains("not a range without gaps"), "{e}");
        let e = err(&[
            ("SLURM_ARRAY_TASK_ID", "8"),
            ("SLURM_ARRAY_TASK_COUNT", "8"),
        ]);
        assert!(e.contains("outside the array"), "{e}");
        let e = err(&[
            ("SLURM_ARRAY_TASK_ID", "x"),
            ("SLURM_ARRAY_TASK_COUNT", "8"),
        ]);
        assert!(e.contains("SLURM_ARRAY_TASK_ID=x"), "{e}");
        let e = err(&[("SLURM_ARRAY_TASK_ID", "0")]);
        assert!(e.contains("not SLURM_ARRAY_TASK_COUNT"), "{e}");
    }
}
