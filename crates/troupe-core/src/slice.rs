//! Splitting one run's hosts into slices, each run by its own ansible-playbook in parallel
//! (Pansible's "ansible in parallel", AWX's job slicing without empty slices).

/// How to split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slicing {
    /// Into this many slices (fewer when there are fewer hosts).
    Count(u32),
    /// Into slices of at most this many hosts.
    Size(u32),
}

/// Splits `hosts` into balanced, contiguous, non-empty slices, keeping inventory order: slice
/// sizes differ by at most one, and there are never more slices than hosts.
pub fn partition<T: Clone>(hosts: &[T], slicing: Slicing) -> Vec<Vec<T>> {
    if hosts.is_empty() {
        return Vec::new();
    }
    let n = hosts.len();
    let count = match slicing {
        Slicing::Count(c) => (c.max(1) as usize).min(n),
        Slicing::Size(s) => n.div_ceil(s.max(1) as usize),
    };
    let base = n / count;
    let extra = n % count;
    let mut out = Vec::with_capacity(count);
    let mut start = 0;
    for i in 0..count {
        let len = base + usize::from(i < extra);
        out.push(hosts[start..start + len].to_vec());
        start += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(n: usize) -> Vec<usize> {
        (0..n).collect()
    }

    #[test]
    fn balanced_and_never_empty() {
        let s = partition(&hosts(12), Slicing::Count(5));
        assert_eq!(
            s.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![3, 3, 2, 2, 2]
        );
        assert_eq!(s.concat(), hosts(12), "every host once, in order");
        let s = partition(&hosts(3), Slicing::Count(10));
        assert_eq!(s.len(), 3, "never more slices than hosts");
        assert!(s.iter().all(|x| x.len() == 1));
        assert!(partition(&hosts(0), Slicing::Count(4)).is_empty());
        let s = partition(&hosts(10), Slicing::Size(4));
        assert_eq!(s.iter().map(Vec::len).collect::<Vec<_>>(), vec![4, 3, 3]);
        assert_eq!(partition(&hosts(5), Slicing::Count(0)).len(), 1);
    }

    #[test]
    fn every_size_is_within_one() {
        for n in 1..60 {
            for c in 1..15u32 {
                let s = partition(&hosts(n), Slicing::Count(c));
                let lens: Vec<usize> = s.iter().map(Vec::len).collect();
                assert!(lens.iter().all(|l| *l > 0));
                assert!(lens.iter().max().unwrap_or(&0) - lens.iter().min().unwrap_or(&0) <= 1);
                assert_eq!(lens.iter().sum::<usize>(), n);
            }
        }
    }
}
