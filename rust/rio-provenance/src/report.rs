//! What a fit reports: one row per tensor, summaries per layer and overall, and the verdict.
use std::collections::BTreeMap;

use serde::Serialize;

/// Decision thresholds. All are relative, so they hold for any tensor scale.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Thresholds {
    /// A tensor equals a parent when ‖candidate − parent‖ ≤ this × ‖candidate‖ (exact copies give 0).
    pub identical: f64,
    /// A tensor is explained by the blend when ‖residual‖ ≤ this × ‖candidate‖. 0.01 sits above
    /// the bf16 rounding of a blend (≈ 0.002) and below typical fine-tuning updates.
    pub explained: f64,
    /// A tensor is an outlier when a coefficient is further than this from the overall mean.
    pub coefficient_outlier: f64,
    /// A blend needs at least this share of the parameters explained ...
    pub blend_share: f64,
    /// ... and at least two parents whose mean coefficient is at least this large.
    pub material_coefficient: f64,
    /// Fine-tuned from a parent: parameter-weighted mean cosine with it at least this.
    pub finetune_cosine: f64,
    /// Fine-tuned from a blend: two material coefficients and a mean R² at least this.
    pub finetune_r2: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            identical: 1e-6,
            explained: 0.01,
            coefficient_outlier: 0.05,
            blend_share: 0.9,
            material_coefficient: 0.05,
            finetune_cosine: 0.9,
            finetune_r2: 0.5,
        }
    }
}

/// The fit of one logical tensor.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TensorFit {
    pub name: String,
    pub layer: Option<usize>,
    /// The name without its layer index, e.g. `mlp.experts.down_proj`.
    pub kind: String,
    pub shape: Vec<usize>,
    pub params: usize,
    /// Elements read per operand (all of them in full mode).
    pub elements: usize,
    pub coefficients: Vec<f64>,
    pub intercept: Option<f64>,
    /// ‖residual‖ / ‖candidate‖ (0 when the candidate is all zeros and fitted exactly).
    pub rel_residual: f64,
    /// 1 − RSS / Σ(y − ȳ)²; `None` for a constant candidate.
    pub r2: Option<f64>,
    /// Cosine of the candidate with each parent; `None` where either is all zeros.
    pub cosines: Vec<Option<f64>>,
    /// ‖candidate − parentᵢ‖ / ‖candidate‖ per parent.
    pub rel_distances: Vec<f64>,
    pub explained: bool,
    pub outlier: bool,
}

/// Parameter-weighted statistics over a group of tensors (a layer, or everything).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// `layer N`, `other` (tensors outside the layers), or `overall`.
    pub name: String,
    pub layer: Option<usize>,
    pub tensors: usize,
    pub params: usize,
    pub coefficient_mean: Vec<f64>,
    pub coefficient_std: Vec<f64>,
    pub coefficient_min: Vec<f64>,
    pub coefficient_max: Vec<f64>,
    pub cosine_mean: Vec<f64>,
    pub rel_residual_mean: f64,
    pub rel_residual_max: f64,
    /// Parameter-weighted mean R² (constant tensors count as 0).
    pub r2_mean: f64,
    /// Share of the parameters in tensors the blend explains.
    pub share_explained: f64,
    pub outliers: Vec<String>,
}

/// A tensor that could not be compared, and why.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NotCompared {
    pub name: String,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKind {
    Identical,
    Blend,
    FineTuned,
    Unrelated,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verdict {
    pub kind: VerdictKind,
    /// The parent (index into the parents) for `identical` and `fine_tuned`.
    pub parent: Option<usize>,
    /// Overall mean coefficients for `blend`.
    pub coefficients: Option<Vec<f64>>,
    /// One line for people.
    pub text: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub candidate: String,
    pub parents: Vec<String>,
    /// `quick` or `full`.
    pub mode: String,
    pub intercept: bool,
    pub thresholds: Thresholds,
    pub tensors: Vec<TensorFit>,
    pub layers: Vec<Summary>,
    pub overall: Summary,
    pub not_compared: Vec<NotCompared>,
    pub verdict: Verdict,
    /// Bytes of tensor data read (all operands).
    pub bytes_read: u64,
    pub seconds: f64,
}

impl Report {
    /// The report as JSON (non-finite numbers become `null`), for the bindings and `--json`.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a report is plain data")
    }
}

/// Summarises `rows` (parameter-weighted), given the parent count.
pub fn summarize(name: &str, layer: Option<usize>, rows: &[&TensorFit], parents: usize) -> Summary {
    let params: usize = rows.iter().map(|r| r.params).sum();
    let w = |r: &TensorFit| if params > 0 { r.params as f64 / params as f64 } else { 1.0 / rows.len().max(1) as f64 };
    // fold from +0.0: an empty f64 sum would be -0.0.
    let mean_of = |f: &dyn Fn(&TensorFit) -> f64| rows.iter().fold(0.0, |acc, r| acc + w(r) * f(r));
    let coefficient_mean: Vec<f64> = (0..parents).map(|i| mean_of(&|r| r.coefficients[i])).collect();
    let coefficient_std = (0..parents).map(|i| mean_of(&|r| (r.coefficients[i] - coefficient_mean[i]).powi(2)).max(0.0).sqrt()).collect();
    // An empty group reports 0 rather than ±infinity.
    let fold = |i: usize, init: f64, pick: fn(f64, f64) -> f64| {
        if rows.is_empty() {
            0.0
        } else {
            rows.iter().map(|r| r.coefficients[i]).fold(init, pick)
        }
    };
    Summary {
        name: name.to_string(),
        layer,
        tensors: rows.len(),
        params,
        coefficient_mean,
        coefficient_std,
        coefficient_min: (0..parents).map(|i| fold(i, f64::INFINITY, f64::min)).collect(),
        coefficient_max: (0..parents).map(|i| fold(i, f64::NEG_INFINITY, f64::max)).collect(),
        cosine_mean: (0..parents).map(|i| mean_of(&|r| r.cosines[i].unwrap_or(0.0))).collect(),
        rel_residual_mean: mean_of(&|r| r.rel_residual),
        rel_residual_max: rows.iter().map(|r| r.rel_residual).fold(0.0, f64::max),
        r2_mean: mean_of(&|r| r.r2.unwrap_or(0.0)),
        share_explained: if params > 0 {
            rows.iter().filter(|r| r.explained).map(|r| r.params).sum::<usize>() as f64 / params as f64
        } else {
            0.0
        },
        outliers: rows.iter().filter(|r| r.outlier).map(|r| r.name.clone()).collect(),
    }
}

/// Marks outliers (not explained, or a coefficient off the overall mean), then summarises each
/// layer (in order, then `other`: the tensors outside the layers) and everything.
pub fn summarize_layers(rows: &mut [TensorFit], parents: usize, t: &Thresholds) -> (Vec<Summary>, Summary) {
    let overall_mean = summarize("overall", None, &rows.iter().collect::<Vec<_>>(), parents).coefficient_mean;
    for r in rows.iter_mut() {
        let off = r.coefficients.iter().zip(&overall_mean).any(|(c, m)| (c - m).abs() > t.coefficient_outlier);
        r.outlier = !r.explained || off;
    }
    let overall = summarize("overall", None, &rows.iter().collect::<Vec<_>>(), parents);
    let mut groups: BTreeMap<Option<usize>, Vec<&TensorFit>> = BTreeMap::new();
    for r in rows.iter() {
        groups.entry(r.layer).or_default().push(r);
    }
    // `None` sorts first in the map; it goes last.
    let layers = groups
        .iter()
        .filter(|(l, _)| l.is_some())
        .chain(groups.iter().filter(|(l, _)| l.is_none()))
        .map(|(layer, g)| summarize(&layer.map_or("other".to_string(), |l| format!("layer {l}")), *layer, g, parents))
        .collect();
    (layers, overall)
}

/// The verdict, in order: identical to a parent, linear blend, fine-tuned from a parent, fine-tuned
/// from a blend (kind `FineTuned` without a parent, with coefficients), unrelated.
pub fn decide(rows: &[TensorFit], overall: &Summary, parent_names: &[String], t: &Thresholds) -> Verdict {
    let verdict = |kind, parent, coefficients, text| Verdict { kind, parent, coefficients, text };
    if rows.is_empty() {
        return verdict(VerdictKind::Unrelated, None, None, "no tensors in common with the parents".to_string());
    }
    let identical = (0..parent_names.len()).find(|&i| rows.iter().all(|r| r.rel_distances[i] <= t.identical));
    if let Some(i) = identical {
        return verdict(VerdictKind::Identical, Some(i), None, format!("identical to parent {}", parent_names[i]));
    }
    let material: Vec<usize> = (0..parent_names.len()).filter(|&i| overall.coefficient_mean[i].abs() >= t.material_coefficient).collect();
    if overall.share_explained >= t.blend_share && material.len() >= 2 {
        let terms: Vec<String> =
            (0..parent_names.len()).map(|i| format!("{:.3} × {}", overall.coefficient_mean[i], parent_names[i])).collect();
        return verdict(
            VerdictKind::Blend,
            None,
            Some(overall.coefficient_mean.clone()),
            format!(
                "linear blend of parents: {} ({:.1}% of parameters explained, mean relative residual {:.2e})",
                terms.join(" + "),
                100.0 * overall.share_explained,
                overall.rel_residual_mean
            ),
        );
    }
    let best = (0..parent_names.len()).max_by(|&a, &b| overall.cosine_mean[a].total_cmp(&overall.cosine_mean[b]));
    if let Some(i) = best.filter(|&i| overall.cosine_mean[i] >= t.finetune_cosine) {
        let params: usize = rows.iter().map(|r| r.params).sum::<usize>().max(1);
        let distance: f64 = rows.iter().map(|r| r.rel_distances[i] * r.params as f64).sum::<f64>() / params as f64;
        return verdict(
            VerdictKind::FineTuned,
            Some(i),
            None,
            format!(
                "fine-tuned from parent {} (mean cosine {:.4}, mean relative distance {:.2e})",
                parent_names[i], overall.cosine_mean[i], distance
            ),
        );
    }
    if material.len() >= 2 && overall.r2_mean >= t.finetune_r2 {
        let terms: Vec<String> =
            (0..parent_names.len()).map(|i| format!("{:.3} × {}", overall.coefficient_mean[i], parent_names[i])).collect();
        return verdict(
            VerdictKind::FineTuned,
            None,
            Some(overall.coefficient_mean.clone()),
            format!(
                "fine-tuned from a blend of parents: {} (mean R² {:.3}, mean relative residual {:.2e})",
                terms.join(" + "),
                overall.r2_mean,
                overall.rel_residual_mean
            ),
        );
    }
    let cos: Vec<String> = overall.cosine_mean.iter().map(|c| format!("{c:.3}")).collect();
    verdict(
        VerdictKind::Unrelated,
        None,
        None,
        format!(
            "unrelated to the parents (mean cosines {}, {:.1}% of parameters explained)",
            cos.join(", "),
            100.0 * overall.share_explained
        ),
    )
}
