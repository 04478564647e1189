//! Dispatch: group (token, slot) pairs by expert with a counting sort, so each expert sees one
//! contiguous block of rows.
use rio_core::moe::{Dispatch, Routing};
use rio_core::{Error, Result};

pub fn dispatch(routing: &Routing, num_experts: usize) -> Result<Dispatch> {
    let mut counts = vec![0u32; num_experts];
    for (slot, &e) in routing.experts.iter().enumerate() {
        let Some(c) = counts.get_mut(e as usize) else {
            return Err(Error::value("experts", format!("slot {slot} names expert {e}, but there are {num_experts} experts")));
        };
        *c += 1;
    }
    let mut offsets = Vec::with_capacity(num_experts + 1);
    offsets.push(0u32);
    for &c in &counts {
        offsets.push(offsets.last().unwrap() + c);
    }
    let mut next = offsets[..num_experts].to_vec();
    let mut order = vec![0u32; routing.experts.len()];
    let mut position = vec![0u32; routing.experts.len()];
    for (slot, &e) in routing.experts.iter().enumerate() {
        let p = next[e as usize];
        next[e as usize] += 1;
        order[p as usize] = slot as u32;
        position[slot] = p;
    }
    Ok(Dispatch { counts, offsets, order, position })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn routing_strategy() -> impl Strategy<Value = (usize, usize, Vec<u32>)> {
        (1usize..40, 1usize..6).prop_flat_map(|(e, k)| {
            let k = k.min(e);
            (
                Just(e),
                Just(k),
                prop::collection::vec(0..e as u32, 0..64 * k).prop_map(move |mut v| {
                    v.truncate(v.len() / k * k);
                    v
                }),
            )
        })
    }

    proptest! {
        #[test]
        fn dispatch_is_a_stable_permutation_grouped_by_expert((e, k, experts) in routing_strategy()) {
            let routing = Routing { top_k: k, weights: vec![1.0; experts.len()], experts: experts.clone() };
            let d = dispatch(&routing, e).unwrap();
            // counts sum to tokens·k and offsets are their prefix sums
            prop_assert_eq!(d.counts.iter().sum::<u32>() as usize, experts.len());
            prop_assert_eq!(d.offsets[e] as usize, experts.len());
            // order is a permutation, position its inverse
            let mut seen = vec![false; experts.len()];
            for (p, &s) in d.order.iter().enumerate() {
                prop_assert!(!seen[s as usize]);
                seen[s as usize] = true;
                prop_assert_eq!(d.position[s as usize] as usize, p);
            }
            // each expert's block holds exactly its slots, in increasing slot order
            for x in 0..e {
                let block = &d.order[d.offsets[x] as usize..d.offsets[x + 1] as usize];
                prop_assert_eq!(block.len() as u32, d.counts[x]);
                prop_assert!(block.iter().all(|&s| experts[s as usize] == x as u32));
                prop_assert!(block.windows(2).all(|w| w[0] < w[1]));
            }
        }
    }

    #[test]
    fn expert_out_of_range_is_an_error() {
        let routing = Routing { top_k: 1, experts: vec![0, 3], weights: vec![1.0, 1.0] };
        assert!(dispatch(&routing, 3).unwrap_err().to_string().contains("expert 3"));
    }
}
