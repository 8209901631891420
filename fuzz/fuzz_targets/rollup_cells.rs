//! `MarketplaceAudit.GetRollupCells` from both ends: the marketplace decodes and checks the
//! request; the gateway decodes the answer and digests its cells. Arbitrary bytes must never
//! panic, a checked request names a known partner, kind and province, and a digest must not
//! depend on the order the cells come in.
#![no_main]

use agriportal_marketplace::domain::check_rollup_request;
use agriportal_platform::reconcile::{cell_hash, is_empty, province_digests};
use agriportal_platform::reference::Reference;
use agriportal_proto::marketplace::v1::{
    GetRollupCellsRequest, GetRollupCellsResponse, RollupKind,
};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        let Ok(request) = GetRollupCellsRequest::decode(bytes) else {
            return;
        };
        match check_rollup_request(&request) {
            Ok((partner, kind, province)) => {
                assert_eq!(partner.to_proto() as i32, request.partner);
                assert!(matches!(kind, RollupKind::Sales | RollupKind::Households));
                match province {
                    None => assert!(request.province_code.is_empty()),
                    Some(code) => assert!(Reference::get().province(code).is_some()),
                }
            }
            Err(err) => {
                let message = err.to_string();
                assert!(
                    ["partner", "kind", "province_code"]
                        .iter()
                        .any(|f| message.contains(f)),
                    "an error that names no field: {message}"
                );
                assert!(message.len() < 200, "the error echoes the input: {message}");
            }
        }
    } else {
        let Ok(response) = GetRollupCellsResponse::decode(bytes) else {
            return;
        };
        let digests = province_digests(&response.cells);
        let mut reversed = response.cells.clone();
        reversed.reverse();
        assert_eq!(digests, province_digests(&reversed));
        let non_empty = response.cells.iter().filter(|c| !is_empty(c)).count() as u64;
        assert_eq!(digests.iter().map(|d| d.cells).sum::<u64>(), non_empty);
        assert!(digests
            .windows(2)
            .all(|w| w[0].province_code < w[1].province_code));
        for cell in &response.cells {
            assert_eq!(cell_hash(cell), cell_hash(&cell.clone()));
        }
    }
});
